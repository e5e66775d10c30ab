"""mridata.org-style 3D HDF5 files (knee3d): the readout fully sampled and already inverse-Fourier-transformed
(hybrid space), so each readout position is an independent ky-kz slice (GLEAM, meddlr); with `volume=True`
one item is the whole 3D k-space."""
from __future__ import annotations

import numpy as np
import torch

from ...physics import fftc
from .. import layouts as L
from .base import RawSlice
from .hdf5 import H5Reader


class MridataReader(H5Reader):
    layout = L.KNEE3D

    def read(self, index: int) -> RawSlice:
        fi, s, kspace, maps, mask = self.read_arrays(index)
        if s < 0:  # hybrid (X, C, Ky, Kz) -> 3D k-space (C, X, Ky, Kz)
            kspace = fftc(torch.from_numpy(np.moveaxis(kspace, 0, 1)), ndim=[-3]).numpy()
            maps = None if maps is None else np.moveaxis(maps, 0, 2)  # (X,M,C,Ky,Kz) -> (M,C,X,Ky,Kz)
        return RawSlice(kspace, maps, mask, fi.path.name, s, None, self.fft_ndim)

    def item_shape(self, index: int) -> tuple:
        fi = self.files[self.items[index][0]]
        x, coils, ky, kz = fi.shape
        return (coils, x, ky, kz) if self.items[index][1] < 0 else (coils, ky, kz)
