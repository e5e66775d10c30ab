"""Fixed kernel bases over scales for scale-equivariant convolutions.

A basis is a tensor (F, S, k, k): F functions, each sampled as a k x k kernel at S scales. A layer's
kernel at scale i is sum_f w_f basis[f, i] with weights w shared across scales, so the parameter count
does not depend on S, and the kernel at a larger scale is the same pattern stretched.

Two bases behind one interface (`scale_basis`):
- hermite (SESN, Sosnovik et al. 2020): phi_nm(x, y) = G_s(x) He_n(x / s) G_s(y) He_m(y / s) for
  n, m < effective_size, G_s a Gaussian of width sigma * s, He the probabilists' Hermite polynomials.
  Approximately equivariant at any scale ratio.
- dilated (DISCO, Sosnovik et al. 2021, the exact case): one free tap per basis function of an
  effective_size x effective_size kernel; at integer scale s the taps sit s pixels apart. Decimating then
  convolving equals convolving with the dilated kernel then decimating, so a factor-2 down-scaling is
  exact up to image borders.

Both keep the kernel's sum (its response to a constant image) the same at every scale, so that a
down-scaled image, whose intensities are unchanged, meets the same responses one scale lower.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

BASES = ("hermite", "dilated")


def check_scales(scales: Sequence[float], who: str) -> tuple[float, ...]:
    """Scales as floats: positive and strictly increasing, else a ValueError naming `who`'s `scales`."""
    try:
        values = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: scales must be a list of numbers, got {scales!r}") from None
    if not values or any(not s > 0 for s in values):
        raise ValueError(f"{who}: scales must be positive numbers, got {list(scales)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{who}: scales must be strictly increasing, got {list(scales)}")
    return values


def _check_sizes(kernel_size: int, effective_size: int, who: str) -> None:
    for key, value in (("kernel_size", kernel_size), ("effective_size", effective_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{who}: {key} must be an integer >= 1, got {value!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"{who}: kernel_size must be odd ('same' padding), got {kernel_size}")
    if effective_size > kernel_size:
        raise ValueError(f"{who}: effective_size {effective_size} is larger than kernel_size {kernel_size}")


def _hermite_1d(n: int, t: Tensor) -> Tensor:
    """Probabilists' Hermite polynomial He_n(t): He_0 = 1, He_1 = t, He_(k+1) = t He_k - k He_(k-1)."""
    prev, cur = torch.ones_like(t), t
    if n == 0:
        return prev
    for k in range(1, n):
        prev, cur = cur, t * cur - k * prev
    return cur


def hermite_basis(kernel_size: int, effective_size: int, scales: Sequence[float], sigma: float = 0.9) -> Tensor:
    """SESN's Hermite-Gaussian basis (effective_size^2, S, k, k) in float64.

    At scale s, phi_nm(x, y) / s^2 (the s^-2 keeps the integral, i.e. the kernel's sum, scale-free); every
    function is divided by its norm at the smallest scale, so relative sizes across scales are kept."""
    who = "hermite basis"
    _check_sizes(kernel_size, effective_size, who)
    scales = check_scales(scales, who)
    if not sigma > 0:
        raise ValueError(f"{who}: sigma must be > 0, got {sigma!r}")
    x = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    per_scale = []
    for s in scales:
        t = x / s
        gauss = torch.exp(-(t**2) / (2 * sigma**2))
        h = torch.stack([gauss * _hermite_1d(n, t / sigma) for n in range(effective_size)])  # (n, k)
        per_scale.append(torch.einsum("nx,my->nmxy", h, h).reshape(-1, kernel_size, kernel_size) / s**2)
    basis = torch.stack(per_scale, dim=1)  # (F, S, k, k)
    return basis / basis[:, :1].flatten(2).norm(dim=2)[:, :, None, None]


def dilated_basis(kernel_size: int, effective_size: int, scales: Sequence[float]) -> Tensor:
    """Exact dilated basis (effective_size^2, S, k, k) in float64: function (a, b) is a unit tap at
    offset s ((a, b) - centre) at integer scale s. Needs integer scales and kernel_size >=
    max(scales) (effective_size - 1) + 1, so that the largest dilated kernel fits."""
    who = "dilated basis"
    _check_sizes(kernel_size, effective_size, who)
    scales = check_scales(scales, who)
    if any(s != round(s) for s in scales):
        raise ValueError(f"{who}: scales must be integers (dilations of the scale-1 kernel), got {list(scales)}; "
                         "use basis: hermite for non-integer scales")
    needed = int(scales[-1]) * (effective_size - 1) + 1
    if needed > kernel_size:
        raise ValueError(f"{who}: effective_size {effective_size} at scale {int(scales[-1])} spans {needed} pixels, "
                         f"larger than kernel_size {kernel_size}")
    centre, half = kernel_size // 2, effective_size // 2
    basis = torch.zeros(effective_size**2, len(scales), kernel_size, kernel_size, dtype=torch.float64)
    for i, s in enumerate(int(s) for s in scales):
        for a in range(effective_size):
            for b in range(effective_size):
                basis[a * effective_size + b, i, centre + s * (a - half), centre + s * (b - half)] = 1.0
    return basis


def scale_basis(kind: str, kernel_size: int, effective_size: int, scales: Sequence[float], **options) -> Tensor:
    """The basis named `kind` ("hermite" or "dilated"), float32, (F, S, k, k)."""
    if kind == "hermite":
        return hermite_basis(kernel_size, effective_size, scales, **options).float()
    if kind == "dilated":
        if options:
            raise ValueError(f"dilated basis: no options, got {sorted(options)}")
        return dilated_basis(kernel_size, effective_size, scales).float()
    raise ValueError(f"basis must be one of {BASES}, got {kind!r}")


def scale_ratio(scales: Sequence[float]) -> float | None:
    """The common ratio of geometric scales (None for a single scale or scales that are not geometric):
    a down-scaling by ratio^j shifts features j scales down."""
    if len(scales) < 2:
        return None
    ratios = [b / a for a, b in zip(scales, scales[1:])]
    return ratios[0] if all(math.isclose(r, ratios[0], rel_tol=1e-2) for r in ratios) else None
