"""PyTorch datasets for the on-disk layouts in `layouts.py`: fastMRI multi-coil (knee/brain),
mridata-style 3D (ky-kz slices or whole volumes) and cine 2D+t.

Files are validated when the dataset is built (keys, dtypes, shapes, readability), so bad data
fails early with the file's name instead of deep inside a training loop. Files are opened per
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


def list_h5(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "data folder does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix == ".h5" and p.is_file())
    if not files:
        raise DataError(root, "no .h5 files in data folder (generate some with "
                        "`python -m mrirecon.data.synthetic --kind knee2d --out DIR`)")
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


def inspect_file(path: Path, layout: L.Layout) -> FileInfo:
    """Validate one file against its layout and return what the dataset needs to index it."""
    from .ismrmrd import parse_header

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(path, f"cannot open HDF5 file (truncated or corrupt?): {e}") from None
    with f:
        try:
            k = _check_array(path, f, L.KSPACE, layout.kspace_ndim, "complex")
            shape = k.shape
            recon_size = None
            if layout.needs_header:
                if L.HEADER not in f:
                    raise DataError(path, "missing ISMRMRD header", key=L.HEADER)
                info = parse_header(f[L.HEADER][()], path=path)
                recon_size = (info.recon_size[0], info.recon_size[1])
            has_target = L.TARGET in f
            if has_target:
                t = _check_array(path, f, L.TARGET, layout.kspace_ndim - 1, "real")
                if t.shape[0] != shape[0]:
                    raise DataError(path, f"{t.shape[0]} slices but kspace has {shape[0]}", key=L.TARGET)
            has_maps = L.MAPS in f
            if has_maps:
                m = _check_array(path, f, L.MAPS, 5, "complex")
                coils = shape[layout.coil_axis]
                spatial = shape[-2:]
                if m.shape[0] != shape[0] or m.shape[2] != coils or m.shape[-2:] != spatial:
                    raise DataError(path, f"shape {m.shape} does not match kspace {shape} "
                                    "(expected (slices, maps, coils, *spatial))", key=L.MAPS)
            has_mask = "mask" in f
            acq = f.attrs.get("acquisition", "")
            acq = acq.decode() if isinstance(acq, bytes) else str(acq)
        except (OSError, KeyError) as e:
            raise DataError(path, f"unreadable content: {e}") from None
    return FileInfo(path, shape[layout.slice_axis], acq, recon_size, has_maps, has_target, has_mask)


class ReconDataset(Dataset):
    """Slice- (or volume-) level dataset over a folder of HDF5 files of one kind.

    kind: knee2d | brain2d (fastMRI layout), knee3d (ky-kz slices, or whole volumes with
    `volume=True`), cine (one item = one slice with all its frames).
    transform: called on a `RawSlice` (e.g. `ReconTransform`).
    acquisitions: keep only files whose `acquisition` attribute is listed (fastMRI filter).
    crop_readout: crop fastMRI's 2x oversampled readout to the recon size from the header.
    """

    def __init__(self, root: str | os.PathLike, kind: str, transform: Callable[[RawSlice], object] | None = None,
                 volume: bool = False, acquisitions: Sequence[str] | None = None,
                 crop_readout: bool = True, sample_rate: float = 1.0, require_maps: bool = False):
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
        files = [inspect_file(p, self.layout) for p in list_h5(root)]
        if acquisitions:
            files = [fi for fi in files if fi.acquisition in set(acquisitions)]
            if not files:
                raise DataError(root, f"no files with acquisition in {list(acquisitions)}")
        if sample_rate < 1:
            files = files[: max(1, round(len(files) * sample_rate))]
        if require_maps:
            missing = [fi.path.name for fi in files if not fi.has_maps]
            if missing:
                raise DataError(root, f"{len(missing)} file(s) without cached coil maps (e.g. {missing[0]}); "
                                "run `python -m mrirecon.data.coil_maps --data DIR`", key=L.MAPS)
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
        with h5py.File(fi.path, "r") as f:
            sl = slice(None) if s < 0 else s
            kspace = f[L.KSPACE][sl]
            maps = f[L.MAPS][sl] if fi.has_maps else None
            mask = f["mask"][()] if fi.has_mask else None
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
