"""PyTorch datasets for the on-disk layouts in `layouts.py`: fastMRI multi-coil (knee/brain),
mridata-style 3D (ky-kz slices or whole volumes) and cine 2D+t.

Files are validated when the dataset is built (keys, dtypes, shapes against each other and against the
ISMRMRD header, number of coil maps, a layout that matches the data kind, readability) and, unless
`scan_values=False`, every k-space and coil-map array is read once to find NaN/Inf values, all-zero
k-space slices and all-zero coil maps. Bad data thus fails before any work, with the folder, file and
key in the message, instead of deep inside a training loop after an epoch of work. Files are opened per
item (no handles kept open: safe with DataLoader workers, no h5py handle leaks).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from . import layouts as L
from .errors import DataError
from .transforms import RawSlice

KINDS = ("knee2d", "brain2d", "knee3d", "cine")


@dataclass(frozen=True)
class Geometry:
    """How a kind of data maps onto the network: FFT dims and convolution dims."""
    fft_ndim: int
    conv_dims: int


def geometry(kind: str, volume: bool = False) -> Geometry:
    if kind in ("knee2d", "brain2d", "fastmri"):
        return Geometry(2, 2)
    if kind == "knee3d":
        return Geometry(3, 3) if volume else Geometry(2, 2)
    if kind == "cine":
        return Geometry(2, 3)  # FFT over (H, W); 3D convolutions over (t, x, y)
    raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")


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


def list_h5(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data folder does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix == ".h5" and p.is_file())
    if not files:
        raise DataError(root, "no .h5 files in data folder (generate some with "
                        "`python -m mrirecon.synthetic --kind knee2d --out DIR`)")
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


PROGRESS_MIN_FILES = 20  # folders at least this large show a progress bar while they are checked


def _check_kind(path: Path, f: h5py.File, layout: L.Layout, kind: str | None) -> None:
    """A file of another kind's layout (e.g. a fastMRI knee2d file under data.kind=knee3d) is named as such."""
    acq = f.attrs.get("acquisition", "")
    acq = acq.decode() if isinstance(acq, bytes) else str(acq)
    if not acq or acq in layout.acquisitions:
        return
    other = sorted({k for k, lay in L.LAYOUTS.items() if acq in lay.acquisitions and k != "fastmri"})
    if other:
        raise DataError(path, f"looks like {' / '.join(other)} data (acquisition {acq!r}), "
                        f"but data.kind is {kind or layout.name!r}", key="attrs/acquisition")


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
                                "coil maps (re-run `python -m mrirecon.data.coil_maps`)", key=L.MAPS)
            if not np.any(ms):
                raise DataError(path, f"slice {s}: coil maps are all zero (re-run `python -m "
                                "mrirecon.data.coil_maps`)", key=L.MAPS)


def inspect_file(path: Path, layout: L.Layout, kind: str | None = None, num_maps: int | None = None,
                 scan_values: bool = False) -> FileInfo:
    """Validate one file against its layout and return what the dataset needs to index it.

    kind: the configured data kind (for naming a file of another kind). num_maps: the number of ESPIRiT
    maps the network expects (checked against cached maps). scan_values: read every k-space and map
    value once (see `_scan_values`)."""
    from .ismrmrd import parse_header

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(path, f"cannot open HDF5 file (truncated or corrupt?): {e}") from None
    with f:
        try:
            _check_kind(path, f, layout, kind)
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
                                    f"`python -m mrirecon.data.coil_maps` with {num_maps} maps, or set "
                                    f"model.num_maps={m.shape[1]})", key=L.MAPS)
            if scan_values:
                _scan_values(path, f, has_maps)
            has_mask = "mask" in f
            file_maps = int(f[L.MAPS].shape[1]) if has_maps else 0
            acq = f.attrs.get("acquisition", "")
            acq = acq.decode() if isinstance(acq, bytes) else str(acq)
        except (OSError, KeyError) as e:
            raise DataError(path, f"unreadable content: {e}") from None
    return FileInfo(path, shape[layout.slice_axis], acq, recon_size, has_maps, has_target, has_mask, file_maps,
                    path if has_maps else None)


class ReconDataset(Dataset):
    """Slice- (or volume-) level dataset over a folder of HDF5 files of one kind.

    kind: knee2d | brain2d (fastMRI layout), knee3d (ky-kz slices, or whole volumes with
    `volume=True`), cine (one item = one slice with all its frames).
    transform: called on a `RawSlice` (e.g. `ReconTransform`).
    acquisitions: keep only files whose `acquisition` attribute is listed (fastMRI filter).
    crop_readout: crop fastMRI's 2x oversampled readout to the recon size from the header.
    num_maps: number of ESPIRiT map sets the network expects (cached maps are checked against it).
    require_maps: every file needs coil maps: its own `espirit_maps` (older files) or, with `maps_cache`
    (a `mrirecon.data.coil_maps.MapCache`), maps from that cache, built there when missing (`maps_workers`
    processes, a progress bar); input files are never written.
    scan_values: read every value once when the dataset is built (NaN/Inf, all-zero slices and maps);
    False skips that read for very large datasets (the structure is still checked).
    progress: a progress bar while checking folders of PROGRESS_MIN_FILES files or more (terminals only).
    """

    def __new__(cls, root: str | os.PathLike, kind: str, *args, **kwargs):
        # A cine folder in the CMRxRecon challenge layout (MATLAB v7.3 files) is read by its own dataset,
        # built with the same arguments (mrirecon/data/cmrxrecon.py).
        if cls is ReconDataset and kind == "cine":
            from .cmrxrecon import CmrxReconDataset, is_cmrxrecon_folder

            if is_cmrxrecon_folder(root):
                return CmrxReconDataset(root, kind, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike, kind: str, transform: Callable[[RawSlice], object] | None = None,
                 volume: bool = False, acquisitions: Sequence[str] | None = None,
                 crop_readout: bool = True, sample_rate: float = 1.0, require_maps: bool = False,
                 num_maps: int | None = None, scan_values: bool = True, progress: bool = True,
                 maps_cache=None, maps_workers: int = 1):
        if kind not in KINDS:
            raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")
        if volume and kind != "knee3d":
            raise ValueError("volume=True is only meaningful for knee3d")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.root, self.kind, self.volume = Path(root), kind, volume
        self.layout = L.LAYOUTS[kind]
        self.geometry = geometry(kind, volume)
        self.transform = transform
        self.crop_readout = crop_readout
        paths = list_h5(root)
        bar = tqdm(paths, desc=f"checking {self.root}", unit="file",
                   disable=None if progress and len(paths) >= PROGRESS_MIN_FILES else True)
        # With a cache, a file whose own maps have another number of map sets uses the cache instead.
        files = [inspect_file(p, self.layout, kind, None if maps_cache is not None else num_maps, scan_values)
                 for p in bar]
        if acquisitions:
            files = [fi for fi in files if fi.acquisition in set(acquisitions)]
            if not files:
                raise DataError(root, f"no files with acquisition in {list(acquisitions)}")
        if sample_rate < 1:
            files = files[: max(1, round(len(files) * sample_rate))]
        if require_maps:
            missing = [fi for fi in files if not fi.has_maps or (num_maps is not None and fi.file_maps != num_maps)]
            if missing and maps_cache is None:
                raise DataError(root, f"{len(missing)} file(s) without coil maps (e.g. {missing[0].path.name}); "
                                "run `python -m mrirecon.data.coil_maps --data DIR` or give a maps cache",
                                key=L.MAPS)
            if missing:
                found = maps_cache.ensure([fi.path for fi in missing], kind, workers=maps_workers,
                                          progress=progress)
                for fi in missing:
                    fi.maps_path = found[fi.path]
        self.files = files
        self.items: list[tuple[int, int]] = []
        for i, fi in enumerate(files):
            if volume:
                self.items.append((i, -1))
            else:
                self.items.extend((i, s) for s in range(fi.num_slices))

    def __len__(self) -> int:
        return len(self.items)

    def volumes(self) -> dict[str, list[int]]:
        """Item indices grouped by file name (for per-volume evaluation)."""
        groups: dict[str, list[int]] = {}
        for idx, (i, _) in enumerate(self.items):
            groups.setdefault(self.files[i].path.name, []).append(idx)
        return groups

    def read(self, index: int) -> RawSlice:
        i, s = self.items[index]
        fi = self.files[i]
        sl = slice(None) if s < 0 else s
        with h5py.File(fi.path, "r") as f:
            kspace = f[L.KSPACE][sl]
            mask = f["mask"][()] if fi.has_mask else None
            maps = f[L.MAPS][sl] if fi.maps_path == fi.path else None
        if fi.maps_path is not None and fi.maps_path != fi.path:
            with h5py.File(fi.maps_path, "r") as f:
                maps = f[L.MAPS][sl]
        if self.kind == "cine":          # (T, C, H, W) -> (C, T, H, W); maps shared over frames
            kspace = np.moveaxis(kspace, 0, 1)
            maps = None if maps is None else maps[:, :, None]
        elif self.volume:                # hybrid (X, C, Ky, Kz) -> 3D k-space (C, X, Ky, Kz)
            from ..physics import fftc
            import torch

            kspace = fftc(torch.from_numpy(np.moveaxis(kspace, 0, 1)), ndim=[-3]).numpy()
            maps = None if maps is None else np.moveaxis(maps, 0, 2)  # (X,M,C,Ky,Kz) -> (M,C,X,Ky,Kz)
        crop = fi.recon_size[0] if (self.crop_readout and fi.recon_size and self.layout is L.FASTMRI) else None
        return RawSlice(kspace, maps, mask, fi.path.name, s, crop, self.geometry.fft_ndim)

    def __getitem__(self, index: int):
        raw = self.read(index)
        return raw if self.transform is None else self.transform(raw)
