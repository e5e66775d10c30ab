"""Cine 2D+t data: the synthetic HDF5 layout (`layouts.CINE`, one item = one slice with all its frames) and,
chosen explicitly by `open_cine` when the folder is in that layout, the CMRxRecon challenge's .mat files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import layouts as L
from .base import RawSlice, ReadOptions, Reader
from .cmrxrecon import CmrxReconReader, is_cmrxrecon_folder
from .hdf5 import H5Reader


class CineH5Reader(H5Reader):
    layout = L.CINE

    def read(self, index: int) -> RawSlice:
        fi, s, kspace, maps, mask = self.read_arrays(index)
        kspace = np.moveaxis(kspace, 0, 1)          # (T, C, H, W) -> (C, T, H, W)
        maps = None if maps is None else maps[:, :, None]  # maps shared over frames
        return RawSlice(kspace, maps, mask, fi.path.name, s, None, self.fft_ndim)

    def item_shape(self, index: int) -> tuple:
        frames, coils, h, w = self.files[self.items[index][0]].shape[1:]
        return (coils, frames, h, w)


def open_cine(root: str | Path, kind: Any, options: ReadOptions) -> Reader:
    """The cine kind's reader: a folder in the CMRxRecon layout (FullSample / AccFactorRR folders, or
    MultiCoil/Cine/TrainingSet below it) is read by `CmrxReconReader`, any other by `CineH5Reader`."""
    cls = CmrxReconReader if is_cmrxrecon_folder(root) else CineH5Reader
    return cls(root, kind, options)


def recognises_cine(root: Path, kind: Any) -> bool:
    """Whether `root` holds cine data in either layout."""
    return CmrxReconReader.recognises(root, kind) or CineH5Reader.recognises(root, kind)

