"""1D masks over the phase-encode (last) dim: fastMRI's random, equispaced and equispaced_fraction masks."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import Mask, MaskFunc, centre_lines, check_pairs, register_mask


class _LineMask1D(MaskFunc):
    """fastMRI-style 1D mask: `round(W * center_fraction)` centre lines plus outer lines.

    One (center_fraction, acceleration) pair is drawn uniformly per mask. The random draws are
    fastMRI's, in its order, from np.random.RandomState(seed): the pair index
    (`randint(len(pairs))`), then the outer lines (`_outer_lines`), so a seed gives the same mask as
    `fastmri.data.subsample` with that seed.
    """

    sampled_dims = (-1,)
    ndims = tuple(range(2, 9))
    layout = "(C, ..., W) with W = phase encode"

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float]):
        self.pairs = check_pairs(center_fractions, accelerations)

    @property
    def center_fractions(self) -> list[float]:
        return [f for f, _ in self.pairs]

    @property
    def accelerations(self) -> list[float]:
        return [a for _, a in self.pairs]

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        width = shape[-1]
        rs = np.random.RandomState(seed)
        center_fraction, acceleration = self.pairs[rs.randint(len(self.pairs))]
        num_low = round(width * center_fraction)  # Python's round: halves go to even, as in fastMRI
        if num_low < 1:
            raise ValueError(f"{type(self).__name__}: center_fractions {center_fraction} keeps no centre "
                             f"line of a phase-encode width of {width}")
        lines = centre_lines(width, num_low) | self._outer_lines(width, acceleration, num_low, rs)
        mask = torch.from_numpy(lines.astype(np.float32)).reshape(*([1] * (len(shape) - 1)), width)
        return Mask(mask, width / int(lines.sum()), (num_low,), float(acceleration))

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError


@register_mask("random")
class RandomMask1D(_LineMask1D):
    """fastMRI's random mask: besides the centre, each line is kept independently with probability
    (W / R - n_low) / (W - n_low), so W / R lines are sampled on average (the centre lines are drawn
    too but kept anyway; with n_low > W / R only the centre remains)."""

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        if num_low >= width:
            return np.zeros(width, dtype=bool)
        prob = (width / acceleration - num_low) / (width - num_low)
        return rs.uniform(size=width) < prob


@register_mask("equispaced")
class EquispacedMask1D(_LineMask1D):
    """fastMRI's equispaced mask: every R-th line from a random offset in [0, R), plus the centre.

    The centre lines come on top of the W / R spaced lines, so the effective acceleration is below
    the nominal R (GRAPPA-style acquisitions). R must be a whole number.
    """

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float]):
        super().__init__(center_fractions, accelerations)
        if any(float(a) != int(a) for _, a in self.pairs):
            raise ValueError(f"accelerations must be whole numbers for equispaced masks, got {self.accelerations}")
        self.pairs = [(f, int(a)) for f, a in self.pairs]

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        offset = rs.randint(0, high=acceleration)
        lines = np.zeros(width, dtype=bool)
        lines[offset::acceleration] = True
        return lines


@register_mask("equispaced_fraction")
class EquispacedFractionMask1D(_LineMask1D):
    """fastMRI's EquispacedMaskFractionFunc: lines spaced by the non-integer step
    R (W - n_low) / (W - n_low R), so that with the centre about W / R lines are sampled in all.

    Positions are offset + k * step rounded to the nearest integer (halves to even), below W - 1, so
    the spacing is only approximately equal and the last line is never an outer line; fastMRI keeps
    this behaviour to match its public multi-coil test masks. Needs center_fraction * R < 1.
    """

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float]):
        super().__init__(center_fractions, accelerations)
        bad = [(f, a) for f, a in self.pairs if f * a >= 1]
        if bad:
            raise ValueError(f"center_fractions times accelerations must be < 1 for equispaced_fraction masks "
                             f"(the centre alone would exceed W / R lines), got pairs {bad}")

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        if num_low * acceleration >= width:
            raise ValueError(f"{type(self).__name__}: center_fractions gives {num_low} centre lines, not fewer "
                             f"than W / R = {width / acceleration:g} for W = {width}, R = {acceleration}")
        step = acceleration * (num_low - width) / (num_low * acceleration - width)
        offset = rs.randint(0, high=round(step))
        # np.arange (not offset + k * step) for the same floating-point positions as fastMRI
        positions = np.rint(np.arange(offset, width - 1, step)).astype(np.int64)
        lines = np.zeros(width, dtype=bool)
        lines[positions] = True
        return lines
