"""2D+t proximal networks for cardiac cine: the image (B, C, *S) has three spatial dims, one of them time.

The unrolled network checks the rank (conv_dims=3: three dims after the channels); which of them is time
and what kind of convolution runs over them is the prox's setting, not the rank's:

- `resnet` (prox/resnet.py) with conv_dims 3: full 3D k x k x k convolutions over (t, y, x), GLEAM's cine
  prior. Nothing here.
- `resnet_2plus1d`: the same residual CNN with every convolution factorised into a spatial 1 x k x k
  convolution, a ReLU and a temporal k_t x 1 x 1 convolution ((2+1)D, Tran et al. CVPR 2018): fewer
  parameters than k^3 and a separate temporal receptive field.
- `resnet_framewise`: one 2D residual CNN applied to every frame, seeing the `context` frames before and after
  it as extra input channels. Time wraps around (a cine covers one periodic heartbeat), so the first
  frame's past neighbours are the last frames. With `lipschitz` < 1 it is invertible (MEL).

`time_axis` is the index of time among the three spatial dims (0 for the (B, C, T, H, W) images of
`data.kind: cine`). Inputs are real: the complex image as 2M channels (see UnrolledNet).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..registry import ProxNet, check_input, register_prox
from .resnet import ResidualBlock, LipschitzResidual, _per_conv_bound, residual_cnn


def _check_int(who: str, key: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{who} prox: {key} must be an integer >= {low}, got {value!r}")


def _check_common(who: str, conv_dims: int, time_axis: object, kernels: dict[str, object]) -> None:
    """Settings every 2D+t prox shares: three spatial dims, a time axis among them, odd kernels."""
    if conv_dims != 3:
        raise ValueError(f"{who} prox needs 2D+t images (conv_dims=3: time and two spatial dims, data.kind "
                         f"cine), got conv_dims={conv_dims}")
    if not isinstance(time_axis, int) or isinstance(time_axis, bool) or time_axis not in (0, 1, 2):
        raise ValueError(f"{who} prox: time_axis must be 0, 1 or 2 (the index of time among the three spatial "
                         f"dims; 0 for cine images (B, C, T, H, W)), got {time_axis!r}")
    for key, value in kernels.items():
        _check_int(who, key, value, 1)
        if value % 2 == 0:  # type: ignore[operator]
            raise ValueError(f"{who} prox: {key} must be odd ('same' padding), got {value}")


class Factorised2Plus1d(nn.Sequential):
    """conv (1, k, k) over (y, x) -> ReLU -> conv (k_t, 1, 1) over t, on (B, C, T, H, W)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, temporal_kernel_size: int, mid: int):
        k, kt = kernel_size, temporal_kernel_size
        super().__init__(nn.Conv3d(cin, mid, (1, k, k), padding=(0, k // 2, k // 2)), nn.ReLU(),
                         nn.Conv3d(mid, cout, (kt, 1, 1), padding=(kt // 2, 0, 0)))


@register_prox("resnet_2plus1d")
class ResNet2Plus1dProx(ProxNet):
    """z = x + f(x); f as the resnet prox's (input conv, `num_blocks` residual blocks, output conv) with
    each convolution a factorised (2+1)D one. `channels` is the width between convolutions (also the width
    between the spatial and temporal halves of each). The output conv starts at zero: the untrained prox
    is the identity, as the resnet's."""

    supported_conv_dims = (3,)

    def __init__(self, in_channels: int, conv_dims: int = 3, channels: int = 32, num_blocks: int = 2,
                 kernel_size: int = 3, temporal_kernel_size: int = 3, time_axis: int = 0):
        super().__init__()
        who = "resnet_2plus1d"
        _check_common(who, conv_dims, time_axis, {"kernel_size": kernel_size,
                                                   "temporal_kernel_size": temporal_kernel_size})
        _check_int(who, "channels", channels, 1)
        _check_int(who, "num_blocks", num_blocks, 0)
        self.conv_dims, self.time_axis = conv_dims, time_axis

        def conv(cin: int, cout: int) -> nn.Module:
            return Factorised2Plus1d(cin, cout, kernel_size, temporal_kernel_size, channels)

        self.conv_in = conv(in_channels, channels)
        self.blocks = nn.Sequential(*[ResidualBlock(conv(channels, channels), conv(channels, channels))
                                      for _ in range(num_blocks)])
        self.conv_out = conv(channels, in_channels)
        nn.init.zeros_(self.conv_out[-1].weight)
        nn.init.zeros_(self.conv_out[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, "resnet_2plus1d prox")
        h = x.movedim(2 + self.time_axis, 2)  # time first: (B, C, T, ., .)
        h = self.conv_out(self.blocks(self.conv_in(h)))
        return x + h.movedim(2, 2 + self.time_axis)


@register_prox("resnet_framewise")
class FramewiseProx(LipschitzResidual, ProxNet):
    """z = x + f(x); frame t of f(x) is a 2D residual CNN (input conv, `num_blocks` residual blocks of
    `channels`, output conv) of frames t - context .. t + context stacked as channels (cyclic in time).

    lipschitz: as the resnet prox's; each frame enters 2 context + 1 outputs, so stacking has norm
    sqrt(2 context + 1) and the 2D convolutions share the rest of the budget: Lip(f) < lipschitz. With
    lipschitz < 1 the prox is inverted by the fixed-point iteration x <- z - f(x) (MEL).
    """

    supported_conv_dims = (3,)
    invertible_when = "lipschitz < 1, e.g. 0.9"

    def __init__(self, in_channels: int, conv_dims: int = 3, channels: int = 32, num_blocks: int = 2,
                 kernel_size: int = 3, context: int = 1, time_axis: int = 0, lipschitz: float | None = None):
        super().__init__()
        who = "resnet_framewise"
        _check_common(who, conv_dims, time_axis, {"kernel_size": kernel_size})
        _check_int(who, "channels", channels, 1)
        _check_int(who, "num_blocks", num_blocks, 0)
        _check_int(who, "context", context, 0)
        if lipschitz is not None and not (isinstance(lipschitz, (int, float)) and not isinstance(lipschitz, bool)
                                          and math.isfinite(lipschitz) and lipschitz > 0):
            raise ValueError(f"resnet_framewise prox: lipschitz must be a positive number or null, got {lipschitz!r}")
        self.conv_dims, self.time_axis, self.context = conv_dims, time_axis, context
        self.lipschitz = None if lipschitz is None else float(lipschitz)
        width = 2 * context + 1
        self.conv_bound = (None if lipschitz is None
                           else _per_conv_bound(float(lipschitz) / math.sqrt(width), num_blocks))

        self.conv_in, self.blocks, self.conv_out = residual_cnn(
            2, in_channels * width, in_channels, channels, num_blocks, kernel_size, self.conv_bound)

    def residual(self, x: Tensor) -> Tensor:
        """f(x) for x (B, C, *S) with time on `time_axis`."""
        h = x.movedim(2 + self.time_axis, 1)  # (B, T, C, H, W)
        B, T, C, H, W = h.shape
        # Neighbour frames t + d, d = -context..context, cyclic: (B, T, (2 context + 1) C, H, W).
        stacked = torch.cat([torch.roll(h, -d, dims=1) for d in range(-self.context, self.context + 1)], dim=2)
        out = self.conv_out(self.blocks(self.conv_in(stacked.reshape(B * T, -1, H, W))))
        return out.reshape(B, T, C, H, W).movedim(1, 2 + self.time_axis)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, "resnet_framewise prox")
        self.prepare()
        return x + self.residual(x)
