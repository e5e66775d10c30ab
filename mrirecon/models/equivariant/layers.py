"""Scale-equivariant convolution layers (SESN, Sosnovik et al. 2020), features (B, C, S, H, W).

    LiftingConv      image (B, C, H, W) -> scales (B, C', S, H, W): one kernel per scale, from shared weights
    ScaleConv        scales -> scales: output scale i sees input scales i .. i + window - 1 (zero padded
                     at the large end), with the kernels at scale i
    project_scales   (B, C, S, H, W) -> (B, C, H, W) by max or mean over scales (invariant to a shift in scale)

A down-scaling of the image by the ratio between neighbouring scales shifts the features one scale down
(exactly for the dilated basis at integer ratios, up to borders and the largest scale, which has no
larger neighbour). Pointwise nonlinearities keep that. Parameters do not depend on S; memory and compute
are about S times those of a plain convolution.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .basis import scale_basis

PROJECTIONS = ("max", "mean")


def _check_channels(who: str, **channels: int) -> None:
    for key, value in channels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{who}: {key} must be an integer >= 1, got {value!r}")


class _BasisConv(nn.Module):
    """Holds the fixed basis (a buffer, so it moves with the module and is saved with it) and its settings."""

    def __init__(self, basis: str, kernel_size: int, effective_size: int, scales: Sequence[float],
                 basis_options: dict | None):
        super().__init__()
        self.register_buffer("basis", scale_basis(basis, kernel_size, effective_size, scales, **(basis_options or {})))
        self.kind, self.kernel_size, self.scales = basis, kernel_size, tuple(float(s) for s in scales)

    @property
    def num_scales(self) -> int:
        return self.basis.shape[1]

    def _kernels(self, weight: Tensor) -> Tensor:
        """(S, out, in..., k, k): weight (out, in..., F) expanded on the basis at each scale."""
        return torch.einsum("...f,fsxy->s...xy", weight, self.basis)


class LiftingConv(_BasisConv):
    """Image -> scales: output scale i is the convolution with the kernel sampled at scale i.

    basis: "hermite" or "dilated" (see basis.py); basis_options: e.g. {"sigma": 0.9} for hermite."""

    def __init__(self, in_channels: int, out_channels: int, scales: Sequence[float], kernel_size: int = 5,
                 effective_size: int = 3, basis: str = "dilated", bias: bool = True, basis_options: dict | None = None):
        _check_channels("LiftingConv", in_channels=in_channels, out_channels=out_channels)
        super().__init__(basis, kernel_size, effective_size, scales, basis_options)
        num_funcs = self.basis.shape[0]
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, num_funcs) / (in_channels * num_funcs) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"LiftingConv: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        S, out = self.num_scales, self.out_channels
        kernels = self._kernels(self.weight).reshape(S * out, self.in_channels, self.kernel_size, self.kernel_size)
        bias = None if self.bias is None else self.bias.repeat(S)
        y = F.conv2d(x, kernels, bias, padding=self.kernel_size // 2)  # (B, S * out, H, W), scale-major
        return y.unflatten(1, (S, out)).transpose(1, 2)


class ScaleConv(_BasisConv):
    """Scales -> scales: out[:, :, i] = sum_{j < window} conv(in[:, :, i + j], K_{i, j}), K_{i, j} the kernel
    of window position j expanded at scale i; inputs beyond the largest scale are zeros. window = 1 is a
    per-scale convolution with shared weights."""

    def __init__(self, in_channels: int, out_channels: int, scales: Sequence[float], kernel_size: int = 5,
                 effective_size: int = 3, basis: str = "dilated", scale_window: int = 2, bias: bool = True,
                 basis_options: dict | None = None):
        _check_channels("ScaleConv", in_channels=in_channels, out_channels=out_channels)
        super().__init__(basis, kernel_size, effective_size, scales, basis_options)
        ok = isinstance(scale_window, int) and not isinstance(scale_window, bool)
        if not ok or not 1 <= scale_window <= self.num_scales:
            raise ValueError(f"ScaleConv: scale_window must be an integer in [1, {self.num_scales}] (the number of "
                             f"scales), got {scale_window!r}")
        num_funcs = self.basis.shape[0]
        fan_in = in_channels * scale_window * num_funcs
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, scale_window, num_funcs) / fan_in**0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.in_channels, self.out_channels, self.scale_window = in_channels, out_channels, scale_window

    def forward(self, h: Tensor) -> Tensor:
        S, window, k = self.num_scales, self.scale_window, self.kernel_size
        cin, out = self.in_channels, self.out_channels
        if h.dim() != 5 or h.shape[1] != cin or h.shape[2] != S:
            raise ValueError(f"ScaleConv: expected (B, {cin}, {S}, H, W), got {tuple(h.shape)}")
        B, _, _, H, W = h.shape
        padded = F.pad(h, (0, 0, 0, 0, 0, window - 1))  # zeros beyond the largest scale
        # Input of scale i: scales i .. i + window - 1 as channels; all scales in one grouped convolution.
        windows = padded.unfold(2, window, 1)  # (B, cin, S, H, W, window)
        x = windows.permute(0, 2, 1, 5, 3, 4).reshape(B, S * cin * window, H, W)
        kernels = self._kernels(self.weight).reshape(S * out, cin * window, k, k)
        bias = None if self.bias is None else self.bias.repeat(S)
        y = F.conv2d(x, kernels, bias, padding=k // 2, groups=S)
        return y.unflatten(1, (S, out)).transpose(1, 2)


def project_scales(h: Tensor, how: str = "max") -> Tensor:
    """(B, C, S, H, W) -> (B, C, H, W): max or mean over the scale axis."""
    if how == "max":
        return h.amax(dim=2)
    if how == "mean":
        return h.mean(dim=2)
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {how!r}")
