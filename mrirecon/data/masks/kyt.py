"""Cine: a different variable-density ky mask per frame."""
from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from .base import Mask, MaskFunc, centre_lines, check_pairs, register_mask


@register_mask("kyt")
class KytMask(MaskFunc):
    """Variable-density random ky-t mask for cine k-space (C, T, H, W) -> mask (1, T, 1, W).

    Every frame samples the `round(W * center_fraction)` centre lines (fastMRI's placement) and then
    outer lines drawn without replacement, independently per frame, with probability proportional to
    the Gaussian density exp(-(k / (density_sigma W))^2 / 2) in the line's distance k from the centre
    index W // 2, up to max(round(W / R), n_low) lines per frame: the acceleration of every frame is
    W / that, as close to R as whole lines allow. Sampling different lines in different frames spreads
    the aliasing over time (incoherent in x-f), which kt methods exploit. One (center_fraction,
    acceleration) pair is drawn per mask, from np.random.default_rng(seed).
    """

    sampled_dims = (-3, -1)
    ndims = (4,)
    layout = "(C, T, H, W) with T = frames, W = phase encode (ky)"

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float],
                 density_sigma: float = 0.25):
        self.pairs = check_pairs(center_fractions, accelerations)
        self.center_fractions = [f for f, _ in self.pairs]
        self.accelerations = [a for _, a in self.pairs]
        if isinstance(density_sigma, bool) or not isinstance(density_sigma, numbers.Real) or not density_sigma > 0:
            raise ValueError(f"density_sigma must be > 0 (Gaussian std as a fraction of W), got {density_sigma!r}")
        self.density_sigma = float(density_sigma)

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        _, frames, _, width = shape
        rng = np.random.default_rng(seed)
        center_fraction, acceleration = self.pairs[int(rng.integers(len(self.pairs)))]
        num_low = round(width * center_fraction)
        if num_low < 1:
            raise ValueError(f"KytMask: center_fractions {center_fraction} keeps no centre line of a "
                             f"phase-encode width of {width}")
        per_frame = min(max(round(width / acceleration), num_low), width)
        centre = centre_lines(width, num_low)
        outer = np.flatnonzero(~centre)
        density = np.exp(-0.5 * ((outer - width // 2) / (self.density_sigma * width)) ** 2)
        lines = np.repeat(centre[None], frames, axis=0)
        for t in range(frames):
            picked = rng.choice(outer, size=per_frame - num_low, replace=False, p=density / density.sum())
            lines[t, picked] = True
        mask = torch.from_numpy(lines.astype(np.float32)).reshape(1, frames, 1, width)
        return Mask(mask, frames * width / int(lines.sum()), (num_low,), float(acceleration))
