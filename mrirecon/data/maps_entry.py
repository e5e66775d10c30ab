"""One coil-map cache entry on disk, in either of two forms, and how a slice's maps are read from it.

- "coarse" (the default): ESPIRiT's eigenvectors and eigenvalues on its coarse grid (`physics.espirit`:
  `espirit_coarse`, 48 x 48 points per slice for fastMRI's kernel 6), datasets `coarse_vectors`
  (slices, M, C, *grid) complex64 and `coarse_eig` (slices, M, *grid) float32, the image shape in the
  attribute `image_shape`. A fastMRI knee slice (640 x 368, 15 coils) takes 0.3 MiB instead of 27 MiB; the
  maps are made when a slice is read (`expand_maps`, only the rows the reader asks for), exactly the maps
  the "full" form stores.
- "full": the maps at every pixel, dataset `espirit_maps` (slices, M, C, *spatial) complex64, as data files
  that carry their own maps hold them.

Both forms hold the same maps of the same file and settings, so they share one cache key: an entry written
in either form is read whichever form the cache is set to write.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from ..physics.espirit import CoarseMaps, expand_maps
from . import layouts as L

VECTORS, EIG = "coarse_vectors", "coarse_eig"
STORES = ("coarse", "full")


def check_entry(f: h5py.File, shape: tuple[int, ...]) -> None:
    """ValueError saying what is wrong unless the open entry `f` holds maps of `shape` (slices, M, C, *spatial)
    in one of the two forms, readable to its last slice."""
    S, M, C, spatial = shape[0], shape[1], shape[2], tuple(shape[3:])
    if L.MAPS in f:
        maps = f[L.MAPS]
        if tuple(maps.shape) != shape or maps.dtype != np.complex64:
            raise ValueError(f"maps {tuple(maps.shape)} {maps.dtype}, expected {shape} complex64")
        maps[-1]  # the last slice is readable: the file is complete
        return
    if VECTORS not in f or EIG not in f:
        raise ValueError(f"neither `{L.MAPS}` nor `{VECTORS}` and `{EIG}` in it")
    v, w = f[VECTORS], f[EIG]
    image = tuple(int(n) for n in v.attrs.get("image_shape", ()))
    grid = tuple(v.shape[3:])
    if (image != spatial or tuple(v.shape[:3]) != (S, M, C) or tuple(w.shape) != (S, M, *grid)
            or len(grid) != len(spatial) or v.dtype != np.complex64 or w.dtype != np.float32):
        raise ValueError(f"coarse maps {tuple(v.shape)} {v.dtype} / {tuple(w.shape)} {w.dtype} of an image {image}, "
                         f"expected ({S}, {M}, {C}, *grid) complex64 of an image {spatial}")
    v[-1], w[-1]


def write_entry(f: h5py.File, slices: int, batch: np.ndarray | CoarseMaps, start: int, attrs: dict) -> int:
    """Write one batch of slices (maps, or coarse maps) at `start` into the open new entry `f`; returns how many."""
    n = len(batch.vectors if isinstance(batch, CoarseMaps) else batch)
    if isinstance(batch, CoarseMaps):
        v, w = batch.vectors.cpu().numpy(), batch.eig.cpu().numpy().astype(np.float32)
        if VECTORS not in f:
            f.create_dataset(VECTORS, shape=(slices, *v.shape[1:]), dtype=np.complex64).attrs.update(
                {**attrs, "image_shape": list(batch.image_shape)})
            f.create_dataset(EIG, shape=(slices, *w.shape[1:]), dtype=np.float32)
        f[VECTORS][start:start + n] = v
        f[EIG][start:start + n] = w
        return n
    if L.MAPS not in f:
        f.create_dataset(L.MAPS, shape=(slices, *batch.shape[1:]), dtype=np.complex64).attrs.update(attrs)
    f[L.MAPS][start:start + n] = batch
    return n


def read_entry(path: Path, index: int | slice, rows: slice = slice(None)) -> np.ndarray:
    """The maps (M, C, *spatial) of slice `index` (or (n, M, C, *spatial) of a slice of slices) of the entry at
    `path`, only `rows` of dim -2: read as stored, or expanded from the coarse form (with the entry's crop)."""
    with h5py.File(path, "r") as f:
        if L.MAPS in f:
            return f[L.MAPS][index, ..., rows, :]
        v, w = f[VECTORS][index], f[EIG][index]
        image = tuple(int(n) for n in f[VECTORS].attrs["image_shape"])
        crop = float(f[VECTORS].attrs["crop"])
    coarse = CoarseMaps(torch.from_numpy(np.ascontiguousarray(v)), torch.from_numpy(np.ascontiguousarray(w)), image)
    return expand_maps(coarse, crop, rows).maps.numpy()
