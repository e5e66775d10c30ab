"""Scale-equivariant prox (Gunel, Sahiner et al., MICCAI 2022: scale-equivariant unrolled networks):
z = x + project(f(x)), f = lifting conv -> scale convs -> scale conv to the input channels, all with
kernels from a fixed basis over `scales` (models/equivariant), projected over scales before the residual
add. The complex image enters as 2M real channels; 2D images and ky-kz slices (conv_dims 2) only.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..equivariant import BASES, PROJECTIONS, LiftingConv, ScaleConv, project_scales
from ..equivariant.basis import check_scales
from ..registry import ProxNet, check_input, register_prox

WHO = "scale_equivariant prox"


@register_prox("scale_equivariant", renamed={"num_layers": "num_blocks"})
class ScaleEquivariantProx(ProxNet):
    """`num_blocks` scale-equivariant convolutions of `channels` width (lifting first, the last back to the
    input channels; the option was `num_layers`), ReLU between them; `projection` (max or mean) over scales,
    then the residual add.

    basis: "dilated" (exact for integer scale ratios; needs integer scales and kernel_size >=
    max(scales) (effective_size - 1) + 1) or "hermite" (SESN; any scales, `sigma` its Gaussian width).
    Parameters do not depend on the number of scales; memory and compute grow about linearly with it."""

    supported_conv_dims = (2,)
    equivariance = "scale"

    def __init__(self, in_channels: int, conv_dims: int = 2, channels: int = 8, num_blocks: int = 3,
                 scales: Sequence[float] = (1, 2), kernel_size: int = 5, effective_size: int = 3,
                 basis: str = "dilated", scale_window: int = 2, projection: str = "max", sigma: float | None = None):
        super().__init__()
        if conv_dims != 2:
            raise ValueError(f"{WHO}: supports conv_dims=2 (2D images and ky-kz slices) only, got conv_dims="
                             f"{conv_dims} (3D volumes and cine need 3D scale-equivariant layers, not built)")
        for key, value, low in (("channels", channels, 1), ("num_blocks", num_blocks, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{WHO}: {key} must be an integer >= {low}, got {value!r}")
        if basis not in BASES:
            raise ValueError(f"{WHO}: basis must be one of {BASES}, got {basis!r}")
        if projection not in PROJECTIONS:
            raise ValueError(f"{WHO}: projection must be one of {PROJECTIONS}, got {projection!r}")
        if sigma is not None and basis != "hermite":
            raise ValueError(f"{WHO}: sigma is the hermite basis's Gaussian width; basis is {basis!r}")
        self.scales = check_scales(scales, WHO)
        self.conv_dims, self.projection = conv_dims, projection
        common = dict(scales=self.scales, kernel_size=kernel_size, effective_size=effective_size, basis=basis,
                      basis_options=None if sigma is None else {"sigma": sigma})
        try:
            self.lift = LiftingConv(in_channels, channels, **common)
            self.convs = nn.ModuleList([ScaleConv(channels, channels if i < num_blocks - 2 else in_channels,
                                                  scale_window=scale_window, **common)
                                        for i in range(num_blocks - 1)])
        except ValueError as e:  # name the prox in the layer's or basis's message
            raise ValueError(f"{WHO}: {e}") from None
        # Each output scale depends on this many larger scales (through the windows of the scale convs).
        self.scale_reach = (scale_window - 1) * len(self.convs)
        # Start as the identity (f = 0), as the resnet prox does: the untrained network is plain PGD/MoDL.
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def features(self, x: Tensor) -> Tensor:
        """The last scale-equivariant features (B, C, S, H, W), before the projection over scales."""
        h = self.lift(x)
        for conv in self.convs:
            h = conv(torch.relu(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, WHO)
        return x + project_scales(self.features(x), self.projection)
