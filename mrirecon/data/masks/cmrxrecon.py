"""The CMRxRecon challenge's sampling pattern (MICCAI 2023, cine): equispaced ky lines and a central band."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import Mask, MaskFunc, check_accelerations, register_mask

CENTRE_LINES = 24  # the challenge's fully sampled central ky band (2023 release)


@register_mask("cmrxrecon")
class CmrxReconMask(MaskFunc):
    """The CMRxRecon 2023 pattern for cine k-space (C, T, H, W) -> mask (1, 1, 1, W): every R-th ky line
    plus a fully sampled central band of `center_lines` lines (24 in the challenge), the same in every frame.

    Lines are placed symmetrically about the k-space centre W // 2 (k with (k - W // 2) % R == 0): the
    challenge documents the spacing and the band but not the offset of its lines, so the placement is
    ours. The effective acceleration is below R because of the band. Where the acquired masks are on disk
    (AccFactorRR folders) the reader uses those instead. One acceleration is drawn per mask (seeded).
    """

    sampled_dims = (-1,)
    ndims = (4,)
    layout = "(C, T, H, W) with T = frames, W = phase encode (ky)"

    def __init__(self, accelerations: Sequence[int] = (4, 8, 10), center_lines: int = CENTRE_LINES):
        values = check_accelerations(accelerations, minimum=1.0)
        if any(float(a) != int(a) for a in values):
            raise ValueError(f"accelerations must be whole numbers for cmrxrecon masks, got {list(accelerations)}")
        self.accelerations = [int(a) for a in values]
        if isinstance(center_lines, bool) or not isinstance(center_lines, int) or center_lines < 1:
            raise ValueError(f"center_lines must be an integer >= 1 (24 in the challenge), got {center_lines!r}")
        self.center_lines = center_lines

    def lines(self, width: int, acceleration: int) -> np.ndarray:
        """The sampled ky lines (width,) bool for one acceleration."""
        if self.center_lines > width:
            raise ValueError(f"CmrxReconMask: center_lines={self.center_lines} exceeds the {width} ky lines")
        k = np.arange(width)
        lines = (k - width // 2) % acceleration == 0
        start = (width - self.center_lines + 1) // 2  # fastMRI's centring of a band around W // 2
        lines[start:start + self.center_lines] = True
        return lines

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        width = shape[-1]
        acceleration = self.accelerations[np.random.default_rng(seed).integers(len(self.accelerations))]
        lines = self.lines(width, acceleration)
        mask = torch.from_numpy(lines.astype(np.float32)).reshape(1, 1, 1, width)
        return Mask(mask, width / int(lines.sum()), (self.center_lines,), float(acceleration))


def synthetic_centre_lines(width: int) -> int:
    """The challenge's 24-line band, narrowed to a quarter of ky for the tiny synthetic images."""
    return min(CENTRE_LINES, max(2, width // 4))
