"""Centered, orthonormal FFTs over the trailing dimensions (sigpy's `fft(..., center=True)` convention)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _dims(x: Tensor, ndim: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(ndim, int):
        if not 1 <= ndim <= x.dim():
            raise ValueError(f"cannot FFT over the last {ndim} dims of a {x.dim()}-d tensor")
        return tuple(range(-ndim, 0))
    return tuple(ndim)


def fftc(x: Tensor, ndim: int | Sequence[int] = 2) -> Tensor:
    """Centered orthonormal FFT over the last `ndim` dims (or the given dims): k = fftshift(F(ifftshift(x)))."""
    dims = _dims(x, ndim)
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.fftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def ifftc(k: Tensor, ndim: int | Sequence[int] = 2) -> Tensor:
    """Inverse of :func:`fftc`."""
    dims = _dims(k, ndim)
    k = torch.fft.ifftshift(k, dim=dims)
    k = torch.fft.ifftn(k, dim=dims, norm="ortho")
    return torch.fft.fftshift(k, dim=dims)
