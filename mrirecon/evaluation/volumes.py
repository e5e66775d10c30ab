"""Regroup per-slice network outputs into volumes, the unit of fastMRI's metrics."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from ..data.layouts import TARGET
from ..physics import rss
from .metrics import center_crop


def magnitude(x: Tensor) -> np.ndarray:
    """(M, *S) complex image -> (*S) float32 magnitude (RSS over ESPIRiT maps)."""
    return rss(x.detach(), 0).float().cpu().numpy()


@dataclass
class Volume:
    images: dict[str, np.ndarray]   # name (e.g. "reconstruction", "target", "zero_filled") -> (slices, ...)
    acceleration: float             # nominal (configured) acceleration
    effective_acceleration: float   # mean over the volume's masks of (locations / sampled)
    num_items: int


@dataclass
class VolumeAccumulator:
    """Collects magnitude images per (file, slice); `volumes()` stacks them in slice order.

    recon_sizes: optional per-file (H, W) to centre-crop every image to (fastMRI's recon size).
    """
    recon_sizes: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    _items: dict = field(default_factory=lambda: defaultdict(dict))
    _accel: dict = field(default_factory=dict)

    def add(self, fname: str, slice_num: int, acceleration: float, effective_acceleration: float,
            **images: np.ndarray) -> None:
        size = self.recon_sizes.get(fname)
        if size is not None:
            images = {k: center_crop(v, size) for k, v in images.items()}
        self._items[fname][int(slice_num)] = images
        self._accel.setdefault(fname, {})[int(slice_num)] = (float(acceleration), float(effective_acceleration))

    def add_batch(self, batch, scale_outputs: dict[str, Tensor]) -> None:
        """Add every sample of a collated `ReconSample` batch; outputs are (B, M, *S) complex."""
        for i, fname in enumerate(batch.fname):
            scale = float(batch.scale[i])
            images = {k: magnitude(v[i]) * scale for k, v in scale_outputs.items()}
            self.add(fname, int(batch.slice_num[i]), float(batch.nominal_acceleration[i]),
                     float(batch.acceleration[i]), **images)

    def volumes(self) -> dict[str, Volume]:
        out = {}
        for fname, slices in sorted(self._items.items()):
            order = sorted(slices)
            names = slices[order[0]].keys()
            if order == [-1]:  # a whole volume in one item
                images = {k: slices[-1][k] for k in names}
            else:
                images = {k: np.stack([slices[s][k] for s in order]) for k in names}
            accel = self._accel[fname]
            out[fname] = Volume(images, accel[order[0]][0], float(np.mean([accel[s][1] for s in order])), len(order))
        return out

    def clear(self) -> None:
        self._items.clear()
        self._accel.clear()


def volume_reference(vol: Volume, path: Path, target_kind: str) -> "np.ndarray | None":
    """What a volume is scored against: for target rss the file's own `reconstruction_rss` (fastMRI's
    reference, exactly) when the volume holds all its slices, else the transform's target magnitude;
    None for a file without a fully sampled reference. (`path` may be no HDF5 file, e.g. other readers.)"""
    target = vol.images.get("target")
    if target_kind == "rss" and target is not None and Path(path).is_file() and h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if TARGET in f and f[TARGET].shape == target.shape:
                return f[TARGET][()]
    return target
