"""A small U-Net prox (Ronneberger et al. 2015) with a global residual: z = x + unet(x).

Inputs of any size work: they are zero-padded up to a multiple of 2^num_blocks on every spatial dim and
cropped back. Not invertible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ProxNet, check_input, conv_class, register_prox


def _double_conv(conv: type[nn.Module], cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, 3, padding=1), nn.ReLU(), conv(cout, cout, 3, padding=1), nn.ReLU())


@register_prox("unet", renamed={"base_channels": "channels", "depth": "num_blocks"})
class UNetProx(ProxNet):
    """`num_blocks` down/up levels (a block: two convolutions on the way down and two on the way up); level i
    has channels * 2^i channels; max-pool down, transposed-conv up. (Options were `base_channels` and `depth`.)"""

    def __init__(self, in_channels: int, conv_dims: int = 2, channels: int = 16, num_blocks: int = 2):
        super().__init__()
        for key, value in (("channels", channels), ("num_blocks", num_blocks)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"unet prox: {key} must be an integer >= 1, got {value!r}")
        conv = conv_class(conv_dims)
        up = nn.ConvTranspose2d if conv_dims == 2 else nn.ConvTranspose3d
        self.conv_dims, self.depth = conv_dims, num_blocks
        depth = num_blocks  # levels
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(conv, in_channels if i == 0 else widths[i - 1], widths[i])
                                   for i in range(depth)])
        self.bottom = _double_conv(conv, widths[depth - 1], widths[depth])
        self.up = nn.ModuleList([up(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))])
        self.up_conv = nn.ModuleList([_double_conv(conv, 2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.out = conv(widths[0], in_channels, 1)
        self._pool = F.max_pool2d if conv_dims == 2 else F.max_pool3d

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, "unet prox")
        spatial = x.shape[2:]
        m = 2**self.depth
        pad: list[int] = []
        for n in reversed(spatial):  # F.pad lists the last dim first
            extra = (-n) % m
            pad += [extra // 2, extra - extra // 2]
        h = F.pad(x, pad)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self._pool(h, 2)
        h = self.bottom(h)
        for up, block, skip in zip(self.up, self.up_conv, reversed(skips)):
            h = block(torch.cat([up(h), skip], dim=1))
        h = self.out(h)
        crop = tuple(slice(p, p + n) for p, n in zip(pad[-2::-2], spatial))
        return x + h[(..., *crop)]
