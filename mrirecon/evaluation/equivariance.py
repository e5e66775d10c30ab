"""Equivariance errors of a prox (or a layer): how far f(g x) is from g f(x) for a scaling or a rotation g.

Scale (Sosnovik et al.'s measure): ||f(down(x)) - down(f(x))|| / ||down(f(x))||, borders cropped, where
down is decimation (every other pixel) for factor 2 -- under which the dilated basis is exact -- and
antialiased bilinear resampling for other factors (e.g. sqrt 2). Rotation: the largest such error over
the rotations by 90, 180 and 270 degrees and, for reflection-equivariant networks, the four reflections.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.equivariant.basis import scale_ratio
from ..physics import complex_to_channels


def downscale(x: Tensor, factor: float) -> Tensor:
    """Down-scale the last two dims by `factor`: decimation for factor 2, antialiased bilinear otherwise.
    Features (B, C, S, H, W) are down-scaled per scale."""
    if not factor > 1:
        raise ValueError(f"downscale: factor must be > 1, got {factor!r}")
    if factor == 2:
        return x[..., ::2, ::2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    out = F.interpolate(flat, scale_factor=1 / factor, mode="bilinear", antialias=True, align_corners=False,
                        recompute_scale_factor=True)
    return out.reshape(*x.shape[:-2], *out.shape[-2:])


def _relative(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@torch.no_grad()
def scale_equivariance_error(f: Callable[[Tensor], Tensor], x: Tensor, factor: float = 2.0, border: int | None = None,
                             scale_shift: int = 0, num_scales: int | None = None) -> float:
    """||f(down(x)) - down(f(x))|| / ||down(f(x))|| over the down-scaled image without `border` pixels on
    each side (default: 1/8 of its smaller side).

    For scale-equivariant features (B, C, S, H, W), `scale_shift` = log(factor) / log(scale ratio): the
    features of the down-scaled image at scale i < `num_scales` are compared with those of the image at
    scale i + shift (default num_scales = S - shift: the largest `scale_shift` scales of f(down(x)) have
    no counterpart; fewer when f mixes neighbouring scales, which carries that gap to smaller scales)."""
    small = downscale(x, factor)
    a, b = f(small), downscale(f(x), factor)
    if a.shape != b.shape:
        raise ValueError(f"scale_equivariance_error: f(down(x)) has shape {tuple(a.shape)}, down(f(x)) "
                         f"{tuple(b.shape)}; use an image size divisible by the factor")
    if scale_shift:
        n = a.shape[2] - scale_shift if num_scales is None else num_scales
        if a.dim() != 5 or not 0 < n <= a.shape[2] - scale_shift:
            raise ValueError(f"scale_equivariance_error: scale_shift={scale_shift} and num_scales={num_scales} need "
                             f"features (B, C, S, H, W) with at least shift + 1 scales, got shape {tuple(a.shape)}")
        a, b = a[:, :, :n], b[:, :, scale_shift:scale_shift + n]
    border = min(a.shape[-2:]) // 8 if border is None else border
    if not 0 <= 2 * border < min(a.shape[-2:]):
        raise ValueError(f"scale_equivariance_error: border {border} leaves nothing of a {tuple(a.shape[-2:])} image")
    crop = (..., slice(border, a.shape[-2] - border), slice(border, a.shape[-1] - border))
    return _relative(a[crop], b[crop])


def _transforms(flips: bool) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
    out = [(f"rot{90 * k}", lambda t, k=k: torch.rot90(t, k, (-2, -1))) for k in (1, 2, 3)]
    if flips:
        out += [(f"flip_rot{90 * k}", lambda t, k=k: torch.rot90(t, k, (-2, -1)).flip(-1)) for k in range(4)]
    return out


@torch.no_grad()
def rotation_equivariance_error(f: Callable[[Tensor], Tensor], x: Tensor, flips: bool | None = None) -> float:
    """max over g of ||f(g x) - g f(x)|| / ||g f(x)||, g the rotations by multiples of 90 degrees and, when
    `flips` (default: unless f is a prox with group "c4"), the reflections."""
    if flips is None:
        flips = getattr(f, "group", "d4") != "c4"
    y = f(x)
    return max(_relative(f(g(x)), g(y)) for _, g in _transforms(flips))


def _scale_shift(prox: nn.Module, factor: float) -> tuple[int, int] | None:
    """(shift, scales compared): how many scales a down-scaling by `factor` shifts a scale-equivariant
    prox's features, and on how many scales they are comparable (its `scale_reach`: how many larger scales
    each output scale depends on). None when the shift is not a whole number of scale steps, no scale is
    comparable, or the prox has no such features."""
    scales = getattr(prox, "scales", None)
    if not hasattr(prox, "features") or not scales or len(scales) < 2:
        return None
    ratio = scale_ratio(scales)
    if ratio is None:
        return None
    shift = math.log(factor) / math.log(ratio)
    n = len(scales) - round(shift) - getattr(prox, "scale_reach", 0)
    if abs(shift - round(shift)) > 1e-2 or round(shift) < 1 or n < 1:
        return None
    return round(shift), n


def equivariance_errors(proxes: Iterable[nn.Module], image: Tensor) -> dict[str, float]:
    """The equivariance errors of the equivariant proxes among `proxes` (those with an `equivariance`
    attribute), each on the complex image (B, M, H, W) as 2M real channels; the largest over proxes.

    Scale-equivariant proxes: the prox's output at factors 2 and sqrt 2 (keys scale_equivariance_error_x2 /
    _x1.41) -- never exact, as the largest scale of a down-scaled image has no counterpart among the finitely
    many scales -- and, where a factor is a whole number of scale steps, its features before the projection
    over scales on the scales both share (scale_feature_equivariance_error_*; 0 up to round-off for the
    dilated basis at factor 2). Rotation-equivariant proxes: rotation_equivariance_error. Empty when no prox
    is equivariant."""
    x = complex_to_channels(image) if torch.is_complex(image) else image
    out: dict[str, float] = {}
    seen: set[int] = set()
    for prox in proxes:
        kind = getattr(prox, "equivariance", None)
        if kind is None or id(prox) in seen:
            continue
        seen.add(id(prox))
        if kind == "scale":
            values = {}
            for label, factor in (("x2", 2.0), ("x1.41", math.sqrt(2))):
                values[f"scale_equivariance_error_{label}"] = scale_equivariance_error(prox, x, factor)
                compared = _scale_shift(prox, factor)
                if compared is not None:
                    values[f"scale_feature_equivariance_error_{label}"] = scale_equivariance_error(
                        prox.features, x, factor, scale_shift=compared[0], num_scales=compared[1])
        elif kind == "rotation":
            values = {"rotation_equivariance_error": rotation_equivariance_error(prox, x)}
        else:
            continue
        for key, value in values.items():
            out[key] = max(out.get(key, 0.0), value)
    return out
