"""Residual CNN prox (GLEAM's PGD prox): z = x + f(x), f = conv -> residual blocks -> conv.

With `lipschitz=L` every convolution is spectrally normalised on the true convolution operator
(power iteration with conv / conv-transpose at the input's size, as in i-ResNet, Behrmann et al. 2019),
so Lip(f) < L. For L < 1 the prox is invertible by the fixed-point iteration x <- z - f(x)
(Banach), which the invertible (MEL) training strategy uses to rebuild inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ProxNet, check_input, conv_class, register_prox

_CONV = {2: F.conv2d, 3: F.conv3d}
_CONV_T = {2: F.conv_transpose2d, 3: F.conv_transpose3d}
_CONV_WEIGHT_GRAD = {2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}
# Spend 1% of the Lipschitz budget on the power iteration's underestimate of each norm.
_MARGIN = 0.99


def _normalize(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(1e-12)


class SpectralNormConv(nn.Module):
    """A 'same'-padded convolution whose operator norm is kept <= `bound`: W_eff = W / max(1, sigma / bound).

    sigma is estimated by power iteration on the convolution operator at the spatial size of the input
    (not on the reshaped weight matrix, whose norm can be off by a factor of the kernel size). The
    power vector `u` is a persistent buffer; in training mode it is refined (`n_power_iterations` steps)
    only when the weights differ from those of the last refinement, so repeated forwards within one
    training step (checkpoint recomputation, MEL inversion and re-run) compute exactly the same function,
    and so does a deep copy. A new input size restarts the iteration (seeded) and runs `init_iters` steps.
    """

    def __init__(self, in_channels: int, out_channels: int, conv_dims: int, kernel_size: int, bound: float,
                 n_power_iterations: int = 1, init_iters: int = 50):
        super().__init__()
        conv = conv_class(conv_dims)(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.weight, self.bias = conv.weight, conv.bias
        self.conv_dims, self.padding, self.bound = conv_dims, kernel_size // 2, float(bound)
        self.n_power_iterations, self.init_iters = n_power_iterations, init_iters
        self.register_buffer("u", torch.zeros(0))
        # The weights u was last refined for (compared by value: robust to copies and device moves).
        self.register_buffer("refined_weight", torch.zeros(0), persistent=False)
        self._u_step = 0  # bumped whenever u changes
        self._sigma_grad: Tensor | None = None  # d sigma / d W at fixed (u, v)
        self._sigma_grad_for: tuple | None = None

    def _op(self, u: Tensor, w: Tensor) -> Tensor:
        return _CONV[self.conv_dims](u, w, None, padding=self.padding)

    def _op_t(self, v: Tensor, w: Tensor) -> Tensor:
        return _CONV_T[self.conv_dims](v, w, None, padding=self.padding)

    @torch.no_grad()
    def _power_iterate(self, u: Tensor, w: Tensor, iters: int) -> Tensor:
        for _ in range(iters):
            u = _normalize(self._op_t(_normalize(self._op(u, w)), w))
        return u

    def _weight_key(self) -> tuple:
        return (self.weight._version, self.weight.data_ptr())

    def _mark_refined(self) -> None:
        self.refined_weight = self.weight.detach().clone()
        self._u_step += 1

    @torch.no_grad()
    def _refresh(self, spatial: tuple[int, ...]) -> None:
        w = self.weight.detach()
        if tuple(self.u.shape[2:]) != spatial or self.u.shape[1] != w.shape[1]:
            # New input size: a fresh (seeded, so reproducible) start, iterated to convergence.
            g = torch.Generator().manual_seed(0)
            u0 = torch.randn((1, w.shape[1], *spatial), generator=g).to(w)
            self.u = self._power_iterate(_normalize(u0), w, self.init_iters)
            self._mark_refined()
        elif self.training and not (self.refined_weight.shape == w.shape and torch.equal(self.refined_weight, w)):
            self.u.copy_(self._power_iterate(self.u, w, self.n_power_iterations))
            self._mark_refined()

    def sigma(self) -> Tensor:
        """Differentiable estimate of ||conv_W||: sigma = <v, conv_W(u)> = sum(W * G), linear in W."""
        key = (*self._weight_key(), self._u_step)
        if self._sigma_grad_for != key:
            with torch.no_grad():
                v = _normalize(self._op(self.u, self.weight))
                self._sigma_grad = _CONV_WEIGHT_GRAD[self.conv_dims](
                    self.u, self.weight.shape, v, padding=self.padding)
            self._sigma_grad_for = key
        return (self.weight * self._sigma_grad).sum()

    def effective_weight(self) -> Tensor:
        return self.weight * torch.clamp(self.bound / self.sigma(), max=1.0)

    def forward(self, x: Tensor) -> Tensor:
        self._refresh(tuple(x.shape[2:]))
        return _CONV[self.conv_dims](x, self.effective_weight(), self.bias, padding=self.padding)

    @torch.no_grad()
    def operator_norm(self, iters: int = 200) -> float:
        """A fresh, converged power-iteration estimate of the normalised convolution's norm."""
        if self.u.numel() == 0:
            raise ValueError("operator_norm needs one forward first (it is taken at the input's size)")
        w = self.effective_weight()
        u = self._power_iterate(self.u, w, iters)
        return float(self._op(u, w).norm())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # u's shape follows the input size, so adopt the stored one before loading into it.
        key = prefix + "u"
        if key in state_dict:
            self.u = torch.empty_like(state_dict[key], device=self.u.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if key in state_dict:
            self._mark_refined()  # the stored u belongs to the stored weights


def _per_conv_bound(lipschitz: float, num_blocks: int) -> float:
    """c with c^2 (1 + c^2)^num_blocks = margin * lipschitz: Lip(f) <= c_in c_out prod_b (1 + c_a c_b)."""
    target, lo, hi = _MARGIN * lipschitz, 0.0, _MARGIN * lipschitz
    hi = max(hi, 1.0)
    for _ in range(100):
        t = 0.5 * (lo + hi)
        lo, hi = (t, hi) if t * (1 + t) ** num_blocks < target else (lo, t)
    return lo**0.5


class ResidualBlock(nn.Module):
    """h -> h + conv_b(relu(conv_a(h))); Lipschitz <= 1 + Lip(conv_a) Lip(conv_b) (ReLU is 1-Lipschitz)."""

    def __init__(self, conv_a: nn.Module, conv_b: nn.Module):
        super().__init__()
        self.conv_a, self.conv_b = conv_a, conv_b

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv_b(torch.relu(self.conv_a(h)))


@register_prox("resnet")
class ResNetProx(ProxNet):
    """z = x + f(x); f = input conv -> `num_blocks` residual blocks of `channels` width -> output conv."""

    def __init__(self, in_channels: int, conv_dims: int = 2, channels: int = 32, num_blocks: int = 2,
                 kernel_size: int = 3, lipschitz: float | None = None, n_power_iterations: int = 1):
        super().__init__()
        for key, value, low in (("channels", channels, 1), ("num_blocks", num_blocks, 0),
                                ("kernel_size", kernel_size, 1), ("n_power_iterations", n_power_iterations, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"resnet prox: {key} must be an integer >= {low}, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"resnet prox: kernel_size must be odd ('same' padding), got {kernel_size}")
        if lipschitz is not None and not (isinstance(lipschitz, (int, float)) and lipschitz > 0):
            raise ValueError(f"resnet prox: lipschitz must be a positive number or null, got {lipschitz!r}")
        self.conv_dims, self.lipschitz = conv_dims, None if lipschitz is None else float(lipschitz)
        self.conv_bound = None if lipschitz is None else _per_conv_bound(float(lipschitz), num_blocks)

        def conv(cin: int, cout: int) -> nn.Module:
            if self.conv_bound is None:
                return conv_class(conv_dims)(cin, cout, kernel_size, padding=kernel_size // 2)
            return SpectralNormConv(cin, cout, conv_dims, kernel_size, self.conv_bound, n_power_iterations)

        self.conv_in = conv(in_channels, channels)
        self.blocks = nn.Sequential(*[ResidualBlock(conv(channels, channels), conv(channels, channels))
                                      for _ in range(num_blocks)])
        self.conv_out = conv(channels, in_channels)
        if self.conv_bound is None:
            # Start as the identity (f = 0): the untrained network is then N plain PGD/MoDL steps from
            # the zero-filled image, a sound reconstruction that training only has to improve on.
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    @property
    def is_invertible(self) -> bool:  # type: ignore[override]
        return self.lipschitz is not None and self.lipschitz < 1

    def residual(self, x: Tensor) -> Tensor:
        """f(x), the learned residual."""
        return self.conv_out(self.blocks(self.conv_in(x)))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, "resnet prox")
        return x + self.residual(x)

    def lipschitz_bound(self, iters: int = 200) -> float:
        """Certified-by-composition bound on Lip(f) from converged norms of the normalised convolutions."""
        if self.conv_bound is None:
            raise ValueError("resnet prox: lipschitz_bound needs the `lipschitz` option")
        bound = self.conv_in.operator_norm(iters) * self.conv_out.operator_norm(iters)
        for block in self.blocks:
            bound *= 1 + block.conv_a.operator_norm(iters) * block.conv_b.operator_norm(iters)
        return bound

    @torch.no_grad()
    def inverse(self, z: Tensor, iters: int = 100, tol: float = 1e-6) -> tuple[Tensor, float]:
        """Solve x + f(x) = z by x <- z - f(x) (a contraction when Lip(f) < 1); returns (x, relative residual)."""
        if not self.is_invertible:
            raise ValueError("resnet prox is invertible only with the `lipschitz` option set below 1 "
                             f"(got lipschitz={self.lipschitz})")
        z_norm = z.norm().clamp_min(1e-30)
        x = z
        fx = self.residual(x)
        for _ in range(iters):
            if float((x + fx - z).norm() / z_norm) <= tol:
                break
            x = z - fx
            fx = self.residual(x)
        return x, float((x + fx - z).norm() / z_norm)
