"""Rotation/reflection-equivariant prox with e2cnn (Weiler and Cesa, NeurIPS 2019): the resnet prox's
architecture, z = x + f(x), f = conv -> residual blocks -> conv, with group-equivariant convolutions for
the rotations by 90 degrees (c4) or those and the reflections (d4).

Field types: each real input channel (the real and the imaginary part of each map) is a scalar image, so
a trivial field (a rotation moves its pixels and changes no values); hidden features are regular fields
(|G| channels each, permuted by the group), on which ReLU is equivariant. 2D only (e2cnn's R2Conv); zero
padding only, so that the exported plain convolutions compute exactly the same function.

e2cnn 0.2.3 is unmaintained; what breaks, and what this module does about it (`_e2cnn`):
- it calls numpy's `ndarray.tostring`, removed in numpy 2.3: refused with a clear message;
- it calls `np.array(x, copy=False)`, which raises since numpy 2.0 when a copy is needed (D4 kernels):
  its kernels/utils module gets numpy with numpy 1's meaning of that call;
- its basis-expansion modules hash by content (through `tostring`) on every torch module traversal:
  given identity hashing, as torch modules have;
- its modules cache their expanded filters in eval mode as state-dict buffers (stale after a later
  load): this prox keeps them in training mode (filters expanded at every forward, state dicts the same
  in both modes) and offers `export()` to plain convolutions for fast inference;
- a whole network cannot be pickled (a lambda inside e2cnn's groups): save state dicts (as Lightning
  does) or the exported module.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..registry import ProxNet, check_input, register_prox

WHO = "rotation_equivariant prox"
GROUPS = {"c4": "rotations by multiples of 90 degrees", "d4": "rotations by 90 degrees and reflections"}


def _e2cnn() -> tuple[Any, Any]:
    """(gspaces, e2cnn.nn), imported on first use (about a second) after checking numpy."""
    if not hasattr(np.ndarray, "tostring"):
        raise ValueError(f"{WHO}: e2cnn 0.2.3 calls numpy's ndarray.tostring, removed in numpy 2.3; installed numpy "
                         f"{np.__version__}. Install numpy < 2.3 (requirements.txt pins it) to use this prox")
    try:
        from e2cnn import gspaces
        from e2cnn import nn as enn
        from e2cnn.kernels import utils as kernel_utils
        from e2cnn.nn.modules.r2_conv.basisexpansion import BasisExpansion
    except ImportError as e:
        raise ValueError(f"{WHO}: needs the e2cnn package ({e})") from None
    kernel_utils.np = _NumpyOneCopySemantics()  # see below; only that e2cnn module sees it
    # e2cnn's basis-expansion modules hash and compare by content (their kernel bases, hashed through
    # ndarray.tostring). torch hashes every submodule on each traversal (.parameters(), .modules()), which
    # then costs a content hash and warns, and content equality lets two convolutions' expansions stand for
    # one. Modules are identities in torch: give them identity semantics (e2cnn's own filter cache keys on
    # the kernel bases, not on these modules, so it is unaffected).
    pending = [BasisExpansion]
    while pending:
        cls = pending.pop()
        cls.__hash__, cls.__eq__ = object.__hash__, object.__eq__  # type: ignore[assignment,method-assign]
        pending += cls.__subclasses__()
    return gspaces, enn


class _NumpyOneCopySemantics:
    """numpy as e2cnn's kernels/utils.py expects it: `np.array(x, copy=False)` meant "copy only if needed"
    before numpy 2.0 and raises since (reached when sampling D4 regular-to-regular kernels); here it is
    `np.asarray(x)`, which is what numpy 1 did. Everything else is numpy itself."""

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - plain forwarding
        return getattr(np, name)

    @staticmethod
    def array(obj: Any, *args: Any, copy: bool | None = True, **kwargs: Any) -> np.ndarray:
        if copy is False:
            return np.asarray(obj, *args, **kwargs)
        return np.array(obj, *args, copy=copy, **kwargs)


class _EquivariantConv(nn.Module):
    """An e2cnn R2Conv on plain tensors (wraps and unwraps GeometricTensor)."""

    def __init__(self, enn: Any, in_type: Any, out_type: Any, kernel_size: int):
        super().__init__()
        with warnings.catch_warnings():  # e2cnn indexes with uint8 masks and calls ndarray.tostring (deprecated)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.conv = enn.R2Conv(in_type, out_type, kernel_size, padding=kernel_size // 2)
        self._wrap = enn.GeometricTensor

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self._wrap(x, self.conv.in_type)).tensor

    def export(self) -> nn.Conv2d:
        """The plain convolution with the current expanded filter and bias."""
        with torch.no_grad():
            weight, bias = self.conv.expand_parameters()
        plain = nn.Conv2d(weight.shape[1], weight.shape[0], self.conv.kernel_size, padding=self.conv.padding,
                          bias=bias is not None)
        with torch.no_grad():
            plain.weight.copy_(weight)
            if bias is not None:
                plain.bias.copy_(bias)
        return plain.to(weight.device)


class _ResidualCNN(nn.Module):
    """x + conv_out(blocks(conv_in(x))), block: h + conv_b(relu(conv_a(h))). Shared by the equivariant prox
    and its export, so both compute the same function by construction."""

    def __init__(self, conv_in: nn.Module, blocks: list[tuple[nn.Module, nn.Module]], conv_out: nn.Module):
        super().__init__()
        self.conv_in, self.conv_out = conv_in, conv_out
        self.conv_a = nn.ModuleList([a for a, _ in blocks])
        self.conv_b = nn.ModuleList([b for _, b in blocks])

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for conv_a, conv_b in zip(self.conv_a, self.conv_b):
            h = h + conv_b(torch.relu(conv_a(h)))
        return x + self.conv_out(h)


@register_prox("rotation_equivariant")
class RotationEquivariantProx(ProxNet):
    """The resnet prox with C4- or D4-equivariant convolutions. `channels`: hidden channels, a multiple of
    the group order (4 for c4, 8 for d4): channels / |G| regular fields."""

    supported_conv_dims = (2,)
    equivariance = "rotation"

    def __init__(self, in_channels: int, conv_dims: int = 2, group: str = "d4", channels: int = 32,
                 num_blocks: int = 2, kernel_size: int = 3):
        super().__init__()
        if conv_dims != 2:
            raise ValueError(f"{WHO}: e2cnn is 2D only: conv_dims=2 (2D images and ky-kz slices), got conv_dims="
                             f"{conv_dims} (3D volumes and cine are not supported)")
        if group not in GROUPS:
            raise ValueError(f"{WHO}: group must be one of {sorted(GROUPS)}, got {group!r}")
        for key, value, low in (("channels", channels, 1), ("num_blocks", num_blocks, 0),
                                ("kernel_size", kernel_size, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{WHO}: {key} must be an integer >= {low}, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"{WHO}: kernel_size must be odd ('same' padding), got {kernel_size}")
        order = 4 if group == "c4" else 8
        if channels % order:
            raise ValueError(f"{WHO}: channels={channels} cannot be realised by regular fields of {group} "
                             f"({order} channels each): use a multiple of {order}")
        gspaces, enn = _e2cnn()
        space = gspaces.Rot2dOnR2(4) if group == "c4" else gspaces.FlipRot2dOnR2(4)
        image = enn.FieldType(space, in_channels * [space.trivial_repr])  # real and imaginary parts: scalars
        hidden = enn.FieldType(space, (channels // order) * [space.regular_repr])
        self.conv_dims, self.group, self.channels = conv_dims, group, channels

        def conv(cin: Any, cout: Any) -> _EquivariantConv:
            return _EquivariantConv(enn, cin, cout, kernel_size)

        self.net = _ResidualCNN(conv(image, hidden), [(conv(hidden, hidden), conv(hidden, hidden))
                                                      for _ in range(num_blocks)], conv(hidden, image))
        # Start as the identity (f = 0), as the resnet prox does.
        with torch.no_grad():
            out = self.net.conv_out.conv
            out.weights.zero_()
            if out.bias is not None:
                out.bias.zero_()

    def train(self, mode: bool = True) -> "RotationEquivariantProx":
        """Sets `training` as usual, but keeps e2cnn's convolutions in training mode: in eval mode they cache
        their filters as state-dict buffers, which go stale when weights are loaded afterwards (this network
        has no dropout or batch norm, so nothing else depends on the mode)."""
        super().train(mode)
        for m in self.modules():
            if type(m).__name__ == "R2Conv":
                nn.Module.train(m, True)
        return self

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, WHO)
        return self.net(x)

    def export(self) -> nn.Module:
        """A plain torch module (nn.Conv2d only, no e2cnn) computing the same function with the current
        weights: for fast inference, or to use the trained prox where e2cnn is not installed."""
        n = self.net
        plain = _ResidualCNN(n.conv_in.export(), [(a.export(), b.export()) for a, b in zip(n.conv_a, n.conv_b)],
                             n.conv_out.export())
        return plain.train(self.training)
