"""The HDF5 layouts of `layouts.py` (fastMRI multi-coil, mridata-style 3D, cine 2D+t): one file checker and
one reader that the per-layout readers (`fastmri.py`, `mridata.py`, `cine.py`) specialise.

Files are validated when the reader is built (keys, dtypes, shapes against each other and against the
ISMRMRD header, a stored mask against the k-space width and its values, number of coil maps, a layout that
matches the data kind, readability) and, unless `scan_values=False`, every k-space and coil-map array is
read once to find NaN/Inf values, all-zero k-space slices and all-zero coil maps. Bad data thus fails before
any work, with the folder, file and key in the message. Files are opened per item (no handles kept open:
safe with DataLoader workers, no h5py handle leaks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
from tqdm import tqdm

from .. import layouts as L
from ..errors import DataError
from ..ismrmrd import parse_header
from ..maps_entry import read_entry
from ..masks import check_mask_values
from .base import RawSlice, ReadOptions, Reader, keep_fraction

PROGRESS_MIN_FILES = 20  # folders at least this large show a progress bar while they are checked


@dataclass
class FileInfo:
    path: Path
    num_slices: int
    acquisition: str
    recon_size: tuple[int, int] | None
    has_maps: bool
    has_target: bool
    has_mask: bool
    file_maps: int = 0                 # ESPIRiT map sets stored inside the file (0: none)
    maps_path: Path | None = None      # where this file's maps are read from (the file itself or the cache)
    shape: tuple[int, ...] = ()        # the `kspace` array's shape


def list_h5(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data folder does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix == ".h5" and p.is_file())
    if not files:
        raise DataError(root, "no .h5 files in data folder (generate some with "
                        "`mrirecon synth --kind knee2d --out DIR`)")
    return files


def _check_array(path: Path, f: h5py.File, key: str, ndim: int, kind: str) -> h5py.Dataset:
    if key not in f:
        raise DataError(path, f"missing key (file has {sorted(f.keys())})", key=key)
    d = f[key]
    if not isinstance(d, h5py.Dataset) or d.ndim != ndim:
        raise DataError(path, f"expected a {ndim}-d array, got shape {getattr(d, 'shape', None)}", key=key)
    want = np.complexfloating if kind == "complex" else np.floating
    if not np.issubdtype(d.dtype, want):
        raise DataError(path, f"expected {kind} data, got dtype {d.dtype}", key=key)
    return d


def acquisition(f: h5py.File) -> str:
    acq = f.attrs.get("acquisition", "")
    return acq.decode() if isinstance(acq, bytes) else str(acq)


def _check_kind(path: Path, f: h5py.File, layout: L.Layout, kind: str | None,
                kinds_by_acquisition: Callable[[str], list[str]] | None) -> None:
    """A file of another kind's layout (e.g. a fastMRI knee2d file under data.kind=knee3d) is named as such."""
    acq = acquisition(f)
    if not acq or acq in layout.acquisitions or kinds_by_acquisition is None:
        return
    other = sorted(k for k in kinds_by_acquisition(acq) if k != kind)
    if other:
        raise DataError(path, f"looks like {' / '.join(other)} data (acquisition {acq!r}), "
                        f"but data.kind is {kind or layout.name!r}", key="attrs/acquisition")


def _check_stored_mask(path: Path, f: h5py.File, shape: tuple[int, ...], columns: bool) -> None:
    """A stored `mask` (fastMRI's test/challenge files: `columns`, one entry per phase-encode column (W,)):
    values 0/1 or boolean, the centre sampled."""
    d = f["mask"]
    if not isinstance(d, h5py.Dataset):
        raise DataError(path, "expected an array", key="mask")
    m = np.asarray(d[()])
    if columns and (m.ndim != 1 or m.shape[0] != shape[-1]):
        raise DataError(path, f"mask has shape {m.shape} but the k-space is {shape[-1]} phase-encode columns wide "
                        f"(kspace {shape}): a fastMRI mask holds one 0/1 entry per column, shape ({shape[-1]},)",
                        key="mask")
    if m.dtype.names or not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
        raise DataError(path, f"mask must be 0/1 or boolean values, got dtype {m.dtype}", key="mask")
    check_mask_values(m, path)
    if columns and not m[shape[-1] // 2]:
        raise DataError(path, f"mask does not sample the k-space centre (column {shape[-1] // 2} of {shape[-1]})",
                        key="mask")


def _scan_values(path: Path, f: h5py.File, has_maps: bool) -> None:
    """Read k-space and coil maps slice by slice: NaN/Inf anywhere, all-zero k-space slices, all-zero maps."""
    k = f[L.KSPACE]
    maps = f[L.MAPS] if has_maps else None
    for s in range(k.shape[0]):
        ks = k[s]
        if not np.isfinite(ks).all():
            raise DataError(path, f"slice {s}: {np.size(ks) - np.isfinite(ks).sum()} NaN/Inf value(s) in k-space",
                            key=L.KSPACE)
        if not np.any(ks):
            raise DataError(path, f"slice {s}: k-space is all zero", key=L.KSPACE)
        if maps is not None:
            ms = maps[s]
            if not np.isfinite(ms).all():
                raise DataError(path, f"slice {s}: {np.size(ms) - np.isfinite(ms).sum()} NaN/Inf value(s) in the "
                                "coil maps (re-run `mrirecon maps`)", key=L.MAPS)
            if not np.any(ms):
                raise DataError(path, f"slice {s}: coil maps are all zero (re-run `mrirecon maps`)", key=L.MAPS)


def inspect_file(path: Path, layout: L.Layout, kind: str | None = None, num_maps: int | None = None,
                 scan_values: bool = False,
                 kinds_by_acquisition: Callable[[str], list[str]] | None = None) -> FileInfo:
    """Validate one file against its layout and return what a reader needs to index it.

    kind: the configured data kind (for naming a file of another kind, with `kinds_by_acquisition`).
    num_maps: the number of ESPIRiT maps the network expects (checked against stored maps). scan_values:
    read every k-space and map value once (see `_scan_values`)."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(path, f"cannot open HDF5 file (truncated or corrupt?): {e}") from None
    with f:
        try:
            _check_kind(path, f, layout, kind, kinds_by_acquisition)
            k = _check_array(path, f, L.KSPACE, layout.kspace_ndim, "complex")
            shape = k.shape
            if shape[layout.slice_axis] == 0 or 0 in shape:
                raise DataError(path, f"empty k-space array, shape {shape}", key=L.KSPACE)
            recon_size = None
            if layout.needs_header:
                if L.HEADER not in f:
                    raise DataError(path, "missing ISMRMRD header", key=L.HEADER)
                info = parse_header(f[L.HEADER][()], path=path)
                recon_size = (info.recon_size[0], info.recon_size[1])
                encoded = (info.encoded_size[0], info.encoded_size[1])
                if tuple(shape[-2:]) != encoded:
                    raise DataError(path, f"k-space is {shape[-2]} x {shape[-1]} (readout x phase encode) but the "
                                    f"ISMRMRD header's encodedSpace matrix is {encoded[0]} x {encoded[1]}",
                                    key=L.KSPACE)
                if info.padding_left < 0 or info.padding_right > shape[-1]:
                    raise DataError(path, f"the ISMRMRD header's encodingLimits put data in phase-encode columns "
                                    f"[{info.padding_left}, {info.padding_right}) of a k-space {shape[-1]} wide",
                                    key=L.HEADER)
            has_target = L.TARGET in f
            if has_target:
                t = _check_array(path, f, L.TARGET, layout.kspace_ndim - 1, "real")
                if t.shape[0] != shape[0]:
                    raise DataError(path, f"{t.shape[0]} slices but kspace has {shape[0]}", key=L.TARGET)
                if recon_size is not None and tuple(t.shape[-2:]) != recon_size:
                    raise DataError(path, f"image size {tuple(t.shape[-2:])} differs from the ISMRMRD header's "
                                    f"reconSpace matrix {recon_size}", key=L.TARGET)
            has_maps = L.MAPS in f
            if has_maps:
                m = _check_array(path, f, L.MAPS, 5, "complex")
                coils = shape[layout.coil_axis]
                spatial = shape[-2:]
                if m.shape[0] != shape[0] or m.shape[2] != coils or m.shape[-2:] != spatial:
                    raise DataError(path, f"shape {m.shape} does not match kspace {shape} "
                                    "(expected (slices, maps, coils, *spatial))", key=L.MAPS)
                if num_maps is not None and m.shape[1] != num_maps:
                    raise DataError(path, f"{m.shape[1]} ESPIRiT map set(s) but model.num_maps={num_maps} (re-run "
                                    f"`mrirecon maps` with {num_maps} maps, or set "
                                    f"model.num_maps={m.shape[1]})", key=L.MAPS)
            has_mask = "mask" in f
            if has_mask:
                _check_stored_mask(path, f, shape, columns=layout.needs_header)
            if scan_values:
                _scan_values(path, f, has_maps)
            file_maps = int(f[L.MAPS].shape[1]) if has_maps else 0
            acq = acquisition(f)
        except (OSError, KeyError) as e:
            raise DataError(path, f"unreadable content: {e}") from None
    return FileInfo(path, shape[layout.slice_axis], acq, recon_size, has_maps, has_target, has_mask, file_maps,
                    path if has_maps else None, tuple(shape))


class H5Reader(Reader):
    """A folder of .h5 files of one layout (`layout`), slice by slice; subclasses turn the arrays into items."""

    layout: L.Layout

    def __init__(self, root: str | os.PathLike, kind: Any, options: ReadOptions):
        super().__init__(root, kind, options)
        o = options
        paths = list_h5(root)
        bar = tqdm(paths, desc=f"checking {self.root}", unit="file",
                   disable=None if o.progress and len(paths) >= PROGRESS_MIN_FILES else True)
        # With a cache, a file whose own maps have another number of map sets uses the cache instead.
        files = [inspect_file(p, self.layout, kind.name, None if o.maps_cache is not None else o.num_maps,
                              o.scan_values, o.kinds_by_acquisition) for p in bar]
        if o.acquisitions:
            files = [fi for fi in files if fi.acquisition in set(o.acquisitions)]
            if not files:
                raise DataError(root, f"no files with acquisition in {list(o.acquisitions)}")
        files = keep_fraction(files, o.sample_rate)
        if o.references:
            undersampled = [fi.path.name for fi in files if fi.has_mask and not fi.has_target]
            if undersampled:
                raise DataError(root, f"{len(undersampled)} undersampled file(s) without a fully sampled reference "
                                f"({', '.join(undersampled[:3])}): a `mask` and no `{L.TARGET}`, as in fastMRI's "
                                "test and challenge sets; training and validation need fully sampled files",
                                key=L.TARGET)
        if o.require_maps:
            self._find_maps(files)
        self.files = files
        self.items = [(i, -1) for i in range(len(files))] if o.volume else \
            [(i, s) for i, fi in enumerate(files) for s in range(fi.num_slices)]

    def _find_maps(self, files: list[FileInfo]) -> None:
        o = self.options
        missing = [fi for fi in files if not fi.has_maps or (o.num_maps is not None and fi.file_maps != o.num_maps)]
        if missing and o.maps_cache is None:
            raise DataError(self.root, f"{len(missing)} file(s) without coil maps (e.g. {missing[0].path.name}); "
                            "run `mrirecon maps --data DIR` or give a maps cache", key=L.MAPS)
        if missing:
            found = o.maps_cache.ensure([fi.path for fi in missing], self.kind.name, workers=o.maps_workers,
                                        progress=o.progress)
            for fi in missing:
                fi.maps_path = found[fi.path]

    def read_arrays(self, index: int, map_rows: slice = slice(None)
                    ) -> tuple[FileInfo, int, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(file, slice (-1: all), k-space, maps or None, stored mask or None) of item `index`, as on disk;
        of the maps only `map_rows` of dim -2 (the recon readout: half of a fastMRI map set is never used)."""
        i, s = self.items[index]
        fi = self.files[i]
        sl = slice(None) if s < 0 else s
        with h5py.File(fi.path, "r") as f:
            kspace = f[L.KSPACE][sl]
            mask = f["mask"][()] if fi.has_mask else None
            maps = f[L.MAPS][sl, ..., map_rows, :] if fi.maps_path == fi.path else None
        if fi.maps_path is not None and fi.maps_path != fi.path:
            maps = read_entry(fi.maps_path, sl, map_rows)  # a cache entry: stored maps, or expanded from coarse
        return fi, s, kspace, maps, mask

    def read(self, index: int) -> RawSlice:
        fi, s, kspace, maps, mask = self.read_arrays(index)
        return RawSlice(kspace, maps, mask, fi.path.name, s, None, self.fft_ndim)

    def item_shape(self, index: int) -> tuple:
        fi = self.files[self.items[index][0]]
        return fi.shape[1:]

    @classmethod
    def recognises(cls, root: Path, kind: Any) -> bool:
        """The first .h5 file's `acquisition` is one of this layout's, or (none given) its k-space has this
        layout's number of dims and (where the layout has one) an ISMRMRD header."""
        try:
            first = list_h5(root)[0]
            with h5py.File(first, "r") as f:
                acq = acquisition(f)
                if acq:
                    return acq in cls.layout.acquisitions
                return (L.KSPACE in f and f[L.KSPACE].ndim == cls.layout.kspace_ndim
                        and (L.HEADER in f) == cls.layout.needs_header)
        except (DataError, OSError):
            return False
