"""fastMRI multi-coil HDF5 files (knee, brain), exactly as distributed: slices of (coils, readout, phase
encode) k-space, the readout 2x oversampled (cropped to the header's recon size, exactly, on request)."""
from __future__ import annotations

from .. import layouts as L
from .base import RawSlice
from .hdf5 import H5Reader


class FastmriReader(H5Reader):
    layout = L.FASTMRI

    def read(self, index: int) -> RawSlice:
        fi = self.files[self.items[index][0]]
        crop = fi.recon_size[0] if self.options.crop_readout and fi.recon_size else None
        height = fi.shape[-2]
        rows = slice((height - crop) // 2, (height - crop) // 2 + crop) if crop and crop < height else slice(None)
        fi, s, kspace, maps, mask = self.read_arrays(index, map_rows=rows)  # maps at the recon readout only
        return RawSlice(kspace, maps, mask, fi.path.name, s, crop, self.fft_ndim)

    def item_shape(self, index: int) -> tuple:
        fi = self.files[self.items[index][0]]
        coils, height, width = fi.shape[1:]
        if self.options.crop_readout and fi.recon_size:
            height = min(height, fi.recon_size[0])
        return (coils, height, width)
