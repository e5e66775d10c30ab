"""Unrolled networks: N unrolls alternating data consistency (DC) with a learned prox.

PGD (proximal gradient descent; GLEAM's and meddlr's networks):
    x <- x - alpha_k A^H(A x - y),  then  x <- prox_k(x)
MoDL (Aggarwal et al. 2019):
    z <- prox_k(x),  then  x <- argmin ||A x - y||^2 + lam_k ||x - z||^2
                              = CG solve of (A^H A + lam_k I) x = A^H y + lam_k z
Both start from the zero-filled image A^H y. The prox sees the complex image (B, M, *S) as 2M real
channels. Each unroll can be inverted (`Unroll.inverse`) when its prox is, which the invertible (MEL)
training strategy uses to rebuild activations instead of storing them.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..physics import SenseOp, channels_to_complex, complex_to_channels, conjugate_gradient
from .registry import build_prox, not_invertible_message, prepare_proxes

DC_KINDS = ("pgd", "modl")


def _softplus_inverse(v: float) -> float:
    return v + math.log(-math.expm1(-v))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def gradient_step(x: Tensor, A: SenseOp, y: Tensor, alpha: Tensor | float) -> Tensor:
    """PGD's data-consistency step x - alpha A^H (A x - y)."""
    return x - alpha * A.H(A(x) - y)


def gradient_step_inverse(v: Tensor, A: SenseOp, y: Tensor, alpha: Tensor | float, max_iter: int = 100,
                          tol: float = 1e-7) -> Tensor:
    """x with gradient_step(x) = v: CG solve of (I - alpha A^H A) x = v - alpha A^H y.

    I - alpha A^H A is positive definite only for 0 < alpha < 1 / ||A^H A||.
    """
    # conjugate_gradient solves (normal + lam I) x = b: here normal = -alpha A^H A and lam = 1.
    return conjugate_gradient(lambda t: -alpha * A.N(t), v - alpha * A.H(y), 1.0, x0=v, max_iter=max_iter, tol=tol)


def modl_data_consistency(z: Tensor, A: SenseOp, y: Tensor, lam: Tensor | float, cg_iters: int) -> Tensor:
    """MoDL's DC: argmin_x ||A x - y||^2 + lam ||x - z||^2, i.e. (A^H A + lam I) x = A^H y + lam z, by CG."""
    return conjugate_gradient(A.N, A.H(y) + lam * z, lam, max_iter=cg_iters)


def modl_data_consistency_inverse(x: Tensor, A: SenseOp, y: Tensor, lam: Tensor | float) -> Tensor:
    """z with modl_data_consistency(z) = x, in closed form (MEL, Kellman et al.):
    z = ((A^H A + lam I) x - A^H y) / lam. Exact when the forward CG solve converged."""
    return (A.N(x) + lam * x - A.H(y)) / lam


class Unroll(nn.Module):
    """One unroll: a prox and a learnable data-consistency parameter (PGD step alpha_k or MoDL lam_k)."""

    def __init__(self, prox: nn.Module, dc: str, step_size_init: float, lam_init: float, cg_iters: int,
                 step_size_max: float | None = None):
        super().__init__()
        self.prox, self.dc, self.cg_iters, self.step_size_max = prox, dc, cg_iters, step_size_max
        if dc == "pgd":
            # alpha = softplus(raw) > 0, or step_size_max * sigmoid(raw) in (0, max) when a maximum is set
            # (the invertible strategy needs alpha < 1 / ||A^H A||).
            raw = _softplus_inverse(step_size_init) if step_size_max is None else _logit(step_size_init / step_size_max)
            self.step_size_raw = nn.Parameter(torch.tensor(raw))
        else:
            self.lam_raw = nn.Parameter(torch.tensor(_softplus_inverse(lam_init)))  # lam = softplus(raw) > 0

    @property
    def step_size(self) -> Tensor:
        if self.step_size_max is None:
            return F.softplus(self.step_size_raw)
        return self.step_size_max * torch.sigmoid(self.step_size_raw)

    @property
    def lam(self) -> Tensor:
        return F.softplus(self.lam_raw)

    def apply_prox(self, x: Tensor) -> Tensor:
        return channels_to_complex(self.prox(complex_to_channels(x)))

    def forward(self, x: Tensor, A: SenseOp, y: Tensor) -> Tensor:
        if self.dc == "pgd":
            return self.apply_prox(gradient_step(x, A, y, self.step_size))
        return modl_data_consistency(self.apply_prox(x), A, y, self.lam, self.cg_iters)

    @property
    def is_invertible(self) -> bool:
        prox_ok = bool(getattr(self.prox, "is_invertible", False))
        return prox_ok and (self.dc == "modl" or self.step_size_max is not None)

    @torch.no_grad()
    def inverse(self, x_out: Tensor, A: SenseOp, y: Tensor, prox_iters: int = 100, prox_tol: float = 1e-6,
                cg_iters: int = 100, cg_tol: float = 1e-7) -> Tensor:
        """Rebuild the unroll's input from its output (exact up to the fixed-point and CG tolerances).

        MoDL: the DC solve is inverted in closed form, z = ((A^H A + lam I) x - A^H y) / lam (Kellman et al.'s
        MEL formula), then the prox by fixed-point iteration. PGD: the prox first, then the gradient step
        v = (I - alpha A^H A) x + alpha A^H y by a CG solve, which needs 0 < alpha < 1 / ||A^H A||.
        """
        if not self.is_invertible:
            reasons = [] if getattr(self.prox, "is_invertible", False) else [not_invertible_message(self.prox)]
            if self.dc == "pgd" and self.step_size_max is None:
                reasons.append("dc: pgd needs step_size_max (the gradient step is invertible for alpha < 1/||A^H A||)")
            raise ValueError("unroll is not invertible: " + "; ".join(reasons))

        def prox_inverse(z: Tensor) -> Tensor:
            x, _ = self.prox.inverse(complex_to_channels(z), iters=prox_iters, tol=prox_tol)
            return channels_to_complex(x)

        if self.dc == "modl":
            return prox_inverse(modl_data_consistency_inverse(x_out, A, y, self.lam))
        return gradient_step_inverse(prox_inverse(x_out), A, y, self.step_size, cg_iters, cg_tol)


class AbsentUnroll(nn.Module):
    """Stands in for an unroll that another process builds (a pipeline stage builds only its own unrolls),
    so unroll indices and state-dict keys stay those of the whole network."""

    is_invertible = False

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, *args: Any) -> Tensor:
        raise RuntimeError(f"unroll {self.index} is not built in this process (another pipeline stage owns it)")


RunUnroll = Callable[[nn.Module, Tensor, SenseOp, Tensor], Tensor]


class UnrolledNet(nn.Module):
    """N unrolls (PGD or MoDL) from the zero-filled image; one definition for every training strategy.

    conv_dims: 2 for 2D slices and ky-kz slices, 3 for 3D volumes (B, M, X, Y, Z) and cine (B, M, T, H, W).
    fft_ndim: 2 for 2D, ky-kz slices and cine (frames are not Fourier transformed), 3 for whole 3D volumes.
    step_size_max: PGD only; when set, alpha_k = step_size_max * sigmoid(raw) stays in (0, step_size_max)
    (the invertible strategy needs it <= 1 so the gradient step can be inverted); else alpha_k = softplus(raw).
    MoDL's lam_k = softplus(raw) > 0.
    owned: the unrolls this process builds (default all); the others are `AbsentUnroll` placeholders. Each
    unroll's initial weights come from its own seed (one draw from the global generator plus its index), so
    they are the same whichever unrolls a process builds: a pipeline stage starts from exactly the weights
    of the single-process network.
    """

    def __init__(self, num_unrolls: int, prox: dict[str, Any], dc: str = "pgd", share_weights: bool = False,
                 num_maps: int = 1, conv_dims: int = 2, fft_ndim: int = 2, step_size_init: float | None = None,
                 lam_init: float = 4.0, cg_iters: int = 10, step_size_max: float | None = None,
                 owned: Iterable[int] | None = None):
        super().__init__()
        if not isinstance(num_unrolls, int) or isinstance(num_unrolls, bool) or num_unrolls < 1:
            raise ValueError(f"num_unrolls must be an integer >= 1, got {num_unrolls!r}")
        if dc not in DC_KINDS:
            raise ValueError(f"dc must be one of {DC_KINDS}, got {dc!r}")
        if not isinstance(num_maps, int) or num_maps < 1:
            raise ValueError(f"num_maps must be an integer >= 1, got {num_maps!r}")
        if conv_dims not in (2, 3):
            raise ValueError(f"conv_dims must be 2 or 3, got {conv_dims!r}")
        if fft_ndim not in (2, 3):
            raise ValueError(f"fft_ndim must be 2 or 3, got {fft_ndim!r}")
        if fft_ndim > conv_dims:
            raise ValueError(f"fft_ndim={fft_ndim} needs images with as many spatial dims, but conv_dims={conv_dims}")
        if not isinstance(cg_iters, int) or cg_iters < 1:
            raise ValueError(f"cg_iters must be an integer >= 1, got {cg_iters!r}")
        if not lam_init > 0:
            raise ValueError(f"lam_init must be > 0, got {lam_init!r}")
        if step_size_max is not None and not step_size_max > 0:
            raise ValueError(f"step_size_max must be > 0 or null, got {step_size_max!r}")
        if step_size_init is None:
            step_size_init = 1.0 if step_size_max is None else 0.5 * step_size_max
        if not step_size_init > 0 or (step_size_max is not None and not step_size_init < step_size_max):
            raise ValueError(f"step_size_init must be in (0, step_size_max={step_size_max}), got {step_size_init!r}"
                             if step_size_max is not None else f"step_size_init must be > 0, got {step_size_init!r}")
        self.num_maps, self.conv_dims, self.fft_ndim = num_maps, conv_dims, fft_ndim
        self.dc, self.share_weights, self.prox_cfg = dc, share_weights, dict(prox)
        self.step_size_max = step_size_max

        owned_set = set(range(num_unrolls)) if owned is None else set(owned)
        if not owned_set <= set(range(num_unrolls)):
            raise ValueError(f"owned unrolls {sorted(owned_set)} are not all in [0, {num_unrolls})")
        if share_weights and len(owned_set) != num_unrolls:
            raise ValueError("share_weights: a network with shared weights cannot be split across processes")
        self.owned = sorted(owned_set)
        base_seed = int(torch.randint(0, 2**62, (1,)).item())  # the only draw from the global generator

        def make_unroll(index: int) -> nn.Module:
            if index not in owned_set:
                return AbsentUnroll(index)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(base_seed + index)
                return Unroll(build_prox(prox, 2 * num_maps, conv_dims), dc, step_size_init, lam_init, cg_iters,
                              step_size_max)

        if share_weights:
            shared = make_unroll(0)
            self.unrolls = nn.ModuleList([shared] * num_unrolls)
        else:
            self.unrolls = nn.ModuleList([make_unroll(i) for i in range(num_unrolls)])

    @property
    def num_unrolls(self) -> int:
        return len(self.unrolls)

    def sense(self, maps: Tensor, mask: Tensor) -> SenseOp:
        """The forward model A for a batch (rebuilt from the batch by every strategy and every GLEAM module)."""
        if maps.dim() != 3 + self.conv_dims:
            raise ValueError(f"maps must be (B, M, C, *S) with {self.conv_dims} spatial dims (conv_dims="
                             f"{self.conv_dims}), got shape {tuple(maps.shape)}")
        if maps.shape[1] != self.num_maps:
            raise ValueError(f"maps have {maps.shape[1]} ESPIRiT maps but the network was built with "
                             f"num_maps={self.num_maps}")
        return SenseOp(maps, mask, self.fft_ndim)

    def prepare(self, unrolls: Iterable[int] | None = None) -> None:
        """Bring weight-derived state of the given unrolls' proxes (default: all) up to date at once before
        a forward, through the prox interface (`ProxNet.prepare_all`, one call per prox class, so a class
        can batch the work across unrolls). Optional (a prox prepares itself when needed); every training
        strategy calls it for the unrolls it is about to run, so all pay the same."""
        idx = range(self.num_unrolls) if unrolls is None else unrolls
        # Placeholders for unrolls built by another process have no prox.
        prepare_proxes(self.unrolls[i].prox for i in idx if hasattr(self.unrolls[i], "prox"))

    def zero_filled(self, kspace: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
        return self.sense(maps, mask).H(kspace)

    def forward(self, kspace: Tensor, maps: Tensor, mask: Tensor, num_unrolls: int | None = None) -> Tensor:
        """Reconstruct (B, M, *S) from kspace (B, C, *S); `num_unrolls=k` stops after k unrolls (anytime)."""
        k = self.num_unrolls if num_unrolls is None else num_unrolls
        if not isinstance(k, int) or not 0 <= k <= self.num_unrolls:
            raise ValueError(f"num_unrolls must be an integer in [0, {self.num_unrolls}], got {num_unrolls!r}")
        A = self.sense(maps, mask)
        return self.apply_unrolls(A.H(kspace), A, kspace, range(k))

    def iter_unrolls(self, x: Tensor, A: SenseOp, y: Tensor, indices: range,
                     run: RunUnroll | None = None) -> Iterator[tuple[int, Tensor]]:
        """The one loop over unrolls: apply unrolls `indices` in order from x, yielding (number of unrolls
        applied so far in the whole network, i.e. index + 1, image) after each. `run(unroll, x, A, y)`
        computes one unroll (default: the unroll itself; gradient checkpointing wraps it). The unrolls'
        weight-derived state is prepared once before the first."""
        self.prepare(indices)
        for i in indices:
            unroll = self.unrolls[i]
            x = unroll(x, A, y) if run is None else run(unroll, x, A, y)
            yield i + 1, x

    def apply_unrolls(self, x: Tensor, A: SenseOp, y: Tensor, indices: range, run: RunUnroll | None = None) -> Tensor:
        """The image after unrolls `indices` (see `iter_unrolls`); x itself when `indices` is empty."""
        for _, x in self.iter_unrolls(x, A, y, indices, run):
            pass
        return x

    def num_parameters(self) -> int:
        """Number of distinct learnable scalars (a shared unroll counts once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def is_invertible(self) -> bool:
        return all(u.is_invertible for u in self.unrolls)
