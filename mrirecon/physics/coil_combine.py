"""Coil combination and complex <-> real-channel conversions."""
from __future__ import annotations

import torch
from torch import Tensor


def rss(x: Tensor, dim: int = 0, eps: float = 0.0) -> Tensor:
    """Root-sum-of-squares over `dim` (coils, or ESPIRiT maps); works for complex and real input. The one
    magnitude of a multi-map or multi-coil image in the project. `eps` is added under the root (a finite
    gradient at zero)."""
    squares = (x.real**2 + x.imag**2).sum(dim) if x.is_complex() else (x**2).sum(dim)
    return torch.sqrt(squares + eps) if eps else torch.sqrt(squares)


def complex_to_channels(x: Tensor) -> Tensor:
    """(B, M, *S) complex -> (B, 2M, *S) real, channels ordered [re_1..re_M, im_1..im_M]."""
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: Tensor) -> Tensor:
    """Inverse of :func:`complex_to_channels`."""
    if x.shape[1] % 2:
        raise ValueError(f"expected an even number of channels (real, imag), got {x.shape[1]}")
    re, im = x.chunk(2, dim=1)
    return torch.complex(re, im)
