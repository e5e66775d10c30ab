"""What every reader shares: the raw item it hands over (`RawSlice`), what it is asked for (`ReadOptions`),
and the interface a data kind's reader implements (`Reader`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np


class RawSlice(NamedTuple):
    """What a reader reads from disk for one item, before the transform."""
    kspace: np.ndarray            # (C, *S) fully sampled (or pre-undersampled if `mask` is given)
    maps: np.ndarray | None       # (M, C, *S) or (M, C, 1, H, W) for cine
    mask: np.ndarray | None       # mask stored with the data (fastMRI test sets, CMRxRecon), broadcastable
    fname: str
    slice_num: int
    readout_crop: int | None      # recon height: crop the fully sampled readout (dim -2) to it
    fft_ndim: int
    # kspace is fully sampled although `mask` is given: the acquired mask of a dataset that ships both
    # (CMRxRecon FullSample + AccFactor masks); the target is then the fully sampled image
    reference: bool = False
    # the nominal acceleration of an acquired mask (CMRxRecon's AccFactorRR folder); None: from the mask
    nominal_acceleration: float | None = None


@dataclass(frozen=True)
class ReadOptions:
    """What a dataset asks of a reader (from `data.*` and the model); readers ignore what does not apply."""
    volume: bool = False                       # whole volumes instead of slices (kinds with a volume geometry)
    acquisitions: Sequence[str] | None = None  # keep only files of these acquisitions (fastMRI's attribute)
    crop_readout: bool = True                  # crop an oversampled readout to the recon size
    sample_rate: float = 1.0                   # keep this fraction of the files
    require_maps: bool = False                 # every item needs stored or cached coil maps (data.maps: file)
    num_maps: int | None = None                # ESPIRiT map sets the network expects
    scan_values: bool = True                   # read every value once (NaN/Inf, all-zero slices and maps)
    progress: bool = True                      # progress bars on a terminal
    maps_cache: Any = None                     # a `coil_maps.MapCache`, where missing maps are built
    maps_workers: int = 1
    mask_func: Any = None                      # the configured mask function (CMRxRecon: which acquired masks)
    references: bool = False                  # every item needs a fully sampled reference (train, val)
    # names the data kinds whose files carry an `acquisition` attribute (a file of another kind is named as such)
    kinds_by_acquisition: Callable[[str], list[str]] | None = None


class Reader:
    """The items of one folder of one data kind.

    A subclass sets `files` (each with `path` (its `name` keys the volume), `num_slices`, `recon_size`) and
    `items` ((file index, slice index or -1 for a whole file)), and implements `read` and `item_shape`.
    It is built as `Reader(root, kind, options)` (kind: the `kinds.DataKind` entry: its `name`, `geometry_for(volume)`)
    and must raise `DataError`, naming the file and what is wrong, for anything it cannot read, before any
    item is read.
    """

    files: list
    items: list[tuple[int, int]]

    def __init__(self, root: str | Path, kind: Any, options: ReadOptions):
        self.root, self.kind, self.options = Path(root), kind, options
        self.fft_ndim = kind.geometry_for(options.volume).fft_ndim

    @classmethod
    def recognises(cls, root: Path, kind: Any) -> bool:
        """Whether `root` holds data in this reader's layout (cheap: one file is looked at)."""
        return False

    def read(self, index: int) -> RawSlice:
        raise NotImplementedError

    def item_shape(self, index: int) -> tuple:
        """The shape of item `index` once transformed (k-space and maps): items of one shape can be batched."""
        raise NotImplementedError

    def volumes(self) -> dict[str, list[int]]:
        """Item indices grouped by file name (for per-volume evaluation)."""
        groups: dict[str, list[int]] = {}
        for idx, (i, _) in enumerate(self.items):
            groups.setdefault(self.files[i].path.name, []).append(idx)
        return groups

    def __len__(self) -> int:
        return len(self.items)


def keep_fraction(files: list, sample_rate: float) -> list:
    """The first `sample_rate` of the files (at least one)."""
    return files if sample_rate >= 1 else files[: max(1, round(len(files) * sample_rate))]
