"""The dataset of one folder of one data kind (`build.build_dataset` builds one from a config).

`ReconDataset(root, kind, ...)` asks the kind's reader (`kinds.py`) for the folder's items; the reader checks
every file when it is built (see `readers/`), so bad data fails before any work, naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from .kinds import get_kind, kinds_by_acquisition
from .readers.base import RawSlice, ReadOptions


class ReconDataset(Dataset):
    """Slice- (or volume-) level dataset over a folder of one data kind.

    kind: a registered data kind (`kinds.registered_kinds()`: knee2d | brain2d (fastMRI layout), knee3d
    (ky-kz slices, or whole volumes with `volume=True`), cine (one item = one slice with all its frames)).
    transform: called on a `RawSlice` (e.g. `ReconTransform`).
    acquisitions: keep only files whose `acquisition` attribute is listed (fastMRI filter).
    crop_readout: crop fastMRI's 2x oversampled readout to the recon size from the header.
    num_maps: number of ESPIRiT map sets the network expects (cached maps are checked against it).
    require_maps: every file needs coil maps: its own `espirit_maps` (older files) or, with `maps_cache`
    (a `mrirecon.data.coil_maps.MapCache`), maps from that cache, built there when missing (`maps_workers`
    processes, a progress bar); input files are never written.
    scan_values: read every value once when the dataset is built (NaN/Inf, all-zero slices and maps);
    False skips that read for very large datasets (the structure is still checked).
    references: every item needs a fully sampled reference (training and validation splits).
    progress: a progress bar while checking large folders (terminals only).
    """

    def __init__(self, root: str | os.PathLike, kind: str, transform: Callable[[RawSlice], object] | None = None,
                 volume: bool = False, acquisitions: Sequence[str] | None = None,
                 crop_readout: bool = True, sample_rate: float = 1.0, require_maps: bool = False,
                 num_maps: int | None = None, scan_values: bool = True, progress: bool = True,
                 maps_cache=None, maps_workers: int = 1, references: bool = False, mask_func: Any = None):
        self.kind_entry = get_kind(kind)
        if volume and self.kind_entry.volume_geometry is None:
            raise ValueError(f"volume=True: data kind {kind!r} has no whole volumes")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.root, self.kind, self.volume = Path(root), kind, volume
        self.geometry = self.kind_entry.geometry_for(volume)
        self.transform = transform
        options = ReadOptions(volume, acquisitions, crop_readout, sample_rate, require_maps, num_maps, scan_values,
                              progress, maps_cache, maps_workers,
                              mask_func if mask_func is not None else getattr(transform, "mask_func", None),
                              references, kinds_by_acquisition)
        self.reader = self.kind_entry.reader(self.root, self.kind_entry, options)
        self.files = self.reader.files
        self.items = self.reader.items

    def __len__(self) -> int:
        return len(self.items)

    def volumes(self) -> dict[str, list[int]]:
        """Item indices grouped by file name (for per-volume evaluation)."""
        return self.reader.volumes()

    def item_shape(self, index: int) -> tuple:
        """The shape of item `index` (k-space dims): items of one shape batch together (`datamodule`)."""
        return self.reader.item_shape(index)

    def read(self, index: int) -> RawSlice:
        return self.reader.read(index)

    def __getitem__(self, index: int):
        raw = self.read(index)
        return raw if self.transform is None else self.transform(raw)
