"""Multi-coil SENSE forward model A = M F S, dimension-generic and batched.

Shapes (B = batch, M = ESPIRiT maps per coil (soft-SENSE), C = coils, S = spatial dims):
    image  x : (B, M, *S) complex
    maps   S : (B, M, C, *S) complex (any spatial dim may be 1 and broadcast, e.g. time in cine)
    kspace y : (B, C, *S) complex
    mask     : real, broadcastable to y (e.g. (B, 1, 1, W) for 1D masks, (B, 1, T, 1, W) for ky-t)
The FFT runs over the last `fft_ndim` dims: 2 for 2D slices, ky-kz slices of 3D data and 2D+t cine
(frames are not Fourier transformed), 3 for whole 3D volumes.
"""
from __future__ import annotations

from torch import Tensor

from .fft import fftc, ifftc


class SenseOp:
    """A(x) = mask * F(maps * x); `.H` is the adjoint, `.N` the normal operator A^H A."""

    def __init__(self, maps: Tensor, mask: Tensor, fft_ndim: int = 2):
        if maps.dim() < 3 + fft_ndim - 1:
            raise ValueError(f"maps must be (B, M, C, *S) with at least {fft_ndim} spatial dims, got {tuple(maps.shape)}")
        self.maps = maps
        self.mask = mask
        self.fft_ndim = fft_ndim

    def forward(self, x: Tensor) -> Tensor:
        coil_images = (self.maps * x.unsqueeze(2)).sum(1)
        return fftc(coil_images, self.fft_ndim) * self.mask

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        coil_images = ifftc(y * self.mask, self.fft_ndim)
        return (self.maps.conj() * coil_images.unsqueeze(1)).sum(2)

    H = adjoint

    def normal(self, x: Tensor) -> Tensor:
        return self.adjoint(self.forward(x))

    N = normal
