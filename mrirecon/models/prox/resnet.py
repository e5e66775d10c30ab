"""Residual CNN prox (GLEAM's PGD prox): z = x + f(x), f = conv -> residual blocks -> conv.

With `lipschitz=L` every convolution is normalised by a certified bound on its operator norm that holds
for inputs of any size (`NormBoundedConv`, prox/conv_norm.py), so Lip(f) < L whatever the image size.
For L < 1 the prox is invertible by the fixed-point iteration x <- z - f(x) (Banach), which the
invertible (MEL) training strategy uses to rebuild inputs.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..registry import ProxNet, check_input, conv_class, prox_name, register_prox
from .conv_norm import NormBoundedConv, refresh_certificates


def _per_conv_bound(lipschitz: float, num_blocks: int) -> float:
    """c with c^2 (1 + c^2)^num_blocks = lipschitz (from below): Lip(f) <= c_in c_out prod_b (1 + c_a c_b).
    (1 - 1e-12): so that the product, evaluated in floating point, stays below `lipschitz`."""
    target, lo, hi = lipschitz * (1 - 1e-12), 0.0, max(lipschitz, 1.0)
    for _ in range(100):
        t = 0.5 * (lo + hi)
        lo, hi = (t, hi) if t * (1 + t) ** num_blocks < target else (lo, t)
    return lo**0.5


@torch.no_grad()
def invert_residual(f: Callable[[Tensor], Tensor], z: Tensor, iters: int = 100,
                    tol: float = 1e-6) -> tuple[Tensor, float]:
    """Solve x + f(x) = z by the fixed-point iteration x <- z - f(x), which converges when Lip(f) < 1
    (Banach); returns (x, relative residual ||x + f(x) - z|| / ||z||). Every residual prox inverts this way."""
    z_norm = z.norm().clamp_min(1e-30)
    x = z
    fx = f(x)
    for _ in range(iters):
        if float((x + fx - z).norm() / z_norm) <= tol:
            break
        x = z - fx
        fx = f(x)
    return x, float((x + fx - z).norm() / z_norm)


class LipschitzResidual:
    """What every residual prox z = x + residual(x) with a `lipschitz` option shares: its certified conv norms
    brought up to date before a forward (`conv_bound` set), and its inverse by fixed-point iteration, which
    Lip(residual) < lipschitz < 1 makes exact (MEL)."""

    @property
    def is_invertible(self) -> bool:  # type: ignore[override]
        return self.lipschitz is not None and self.lipschitz < 1

    def prepare(self) -> None:
        """This prox's out-of-date certificates, together (no-op when current or unconstrained); once per
        forward or inversion, not per residual evaluation inside the fixed-point loop."""
        if self.conv_bound is not None:
            refresh_certificates(self)

    @classmethod
    def prepare_all(cls, proxes: Sequence[ProxNet]) -> None:
        """The certificates of several resnet proxes in one `refresh_certificates` call: kernels of one
        shape share the branch and bound's work (each certificate is the same as alone)."""
        refresh_certificates([p for p in proxes if getattr(p, "conv_bound", None) is not None])

    @torch.no_grad()
    def inverse(self, z: Tensor, iters: int = 100, tol: float = 1e-6) -> tuple[Tensor, float]:
        """Solve x + f(x) = z by x <- z - f(x) (a contraction when Lip(f) < 1); returns (x, relative residual)."""
        if not self.is_invertible:
            raise ValueError(f"{prox_name(self)} prox is invertible only with the `lipschitz` option set below 1 "
                             f"(got lipschitz={self.lipschitz})")
        self.prepare()
        return invert_residual(self.residual, z, iters, tol)


class ResidualBlock(nn.Module):
    """h -> h + conv_b(relu(conv_a(h))); Lipschitz <= 1 + Lip(conv_a) Lip(conv_b) (ReLU is 1-Lipschitz)."""

    def __init__(self, conv_a: nn.Module, conv_b: nn.Module):
        super().__init__()
        self.conv_a, self.conv_b = conv_a, conv_b

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv_b(torch.relu(self.conv_a(h)))


def residual_cnn(conv_dims: int, in_channels: int, out_channels: int, channels: int, num_blocks: int,
                 kernel_size: int, conv_bound: float | None) -> tuple[nn.Module, nn.Sequential, nn.Module]:
    """The layers of a residual prox's f: input conv -> `num_blocks` residual blocks -> output conv, 'same'
    padded. With `conv_bound` every conv is certified-normalised to it (Lipschitz proxes); without, the
    output conv starts at zero, so the prox starts as the identity: the untrained network is then N plain
    PGD/MoDL steps from the zero-filled image, a sound reconstruction that training only has to improve on."""

    def conv(cin: int, cout: int) -> nn.Module:
        if conv_bound is None:
            return conv_class(conv_dims)(cin, cout, kernel_size, padding=kernel_size // 2)
        return NormBoundedConv(cin, cout, conv_dims, kernel_size, conv_bound)

    conv_in = conv(in_channels, channels)
    blocks = nn.Sequential(*[ResidualBlock(conv(channels, channels), conv(channels, channels))
                             for _ in range(num_blocks)])
    conv_out = conv(channels, out_channels)
    if conv_bound is None:
        nn.init.zeros_(conv_out.weight)
        nn.init.zeros_(conv_out.bias)
    return conv_in, blocks, conv_out


@register_prox("resnet")
class ResNetProx(LipschitzResidual, ProxNet):
    """z = x + f(x); f = input conv -> `num_blocks` residual blocks of `channels` width -> output conv."""

    def __init__(self, in_channels: int, conv_dims: int = 2, channels: int = 32, num_blocks: int = 2,
                 kernel_size: int = 3, lipschitz: float | None = None):
        super().__init__()
        for key, value, low in (("channels", channels, 1), ("num_blocks", num_blocks, 0),
                                ("kernel_size", kernel_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"resnet prox: {key} must be an integer >= {low}, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"resnet prox: kernel_size must be odd ('same' padding), got {kernel_size}")
        if lipschitz is not None and not (isinstance(lipschitz, (int, float)) and lipschitz > 0):
            raise ValueError(f"resnet prox: lipschitz must be a positive number or null, got {lipschitz!r}")
        self.conv_dims, self.lipschitz = conv_dims, None if lipschitz is None else float(lipschitz)
        self.conv_bound = None if lipschitz is None else _per_conv_bound(float(lipschitz), num_blocks)
        self.conv_in, self.blocks, self.conv_out = residual_cnn(
            conv_dims, in_channels, in_channels, channels, num_blocks, kernel_size, self.conv_bound)

    invertible_when = "lipschitz < 1, e.g. 0.9"

    def residual(self, x: Tensor) -> Tensor:
        """f(x), the learned residual."""
        return self.conv_out(self.blocks(self.conv_in(x)))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, "resnet prox")
        self.prepare()
        return x + self.residual(x)

    def lipschitz_bound(self) -> float:
        """Certified bound on Lip(f), for inputs of any size: the composition of the convolutions'
        certified norms (ReLU is 1-Lipschitz, a residual block adds the identity)."""
        if self.conv_bound is None:
            raise ValueError("resnet prox: lipschitz_bound needs the `lipschitz` option")
        bound = self.conv_in.certified_norm() * self.conv_out.certified_norm()
        for block in self.blocks:
            bound *= 1 + block.conv_a.certified_norm() * block.conv_b.certified_norm()
        return bound
