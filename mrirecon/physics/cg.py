"""Batched, differentiable conjugate gradient for Hermitian positive-definite systems.

Solves (A^H A + lam I) x = b per batch element (MoDL's data-consistency step). Gradients flow
through the iterations by autograd, so they are exact for the computation performed (also when
CG is stopped early, as MoDL does with a fixed small number of iterations).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample <a, b> = sum conj(a) b over all non-batch dims, real part (Hermitian systems)."""
    return (a.conj() * b).real.flatten(1).sum(1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def conjugate_gradient(
    normal: Callable[[Tensor], Tensor],
    b: Tensor,
    lam: Tensor | float = 0.0,
    x0: Tensor | None = None,
    max_iter: int = 10,
    tol: float = 0.0,
) -> Tensor:
    """Solve (normal + lam I) x = b for each sample of the batch.

    Stops after `max_iter` iterations, or earlier once every sample's residual norm is below
    `tol` times the norm of its right-hand side (tol=0 always runs `max_iter`, keeping the graph fixed).
    """
    if not torch.is_tensor(lam):
        lam = torch.tensor(float(lam), device=b.device)
    lam_b = _bcast(lam.reshape(-1).expand(b.shape[0]) if lam.numel() > 1 else lam.reshape(1).expand(b.shape[0]), b)

    def op(v: Tensor) -> Tensor:
        return normal(v) + lam_b * v

    x = torch.zeros_like(b) if x0 is None else x0
    r = b - op(x) if x0 is not None else b
    p = r
    rs = _dot(r, r)
    b_norm2 = _dot(b, b)
    eps = torch.finfo(rs.dtype).tiny
    for _ in range(max_iter):
        if tol > 0 and bool((rs <= (tol**2) * b_norm2).all()):
            break
        ap = op(p)
        alpha = rs / _dot(p, ap).clamp_min(eps)
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * ap
        rs_new = _dot(r, r)
        p = r + _bcast(rs_new / rs.clamp_min(eps), p) * p
        rs = rs_new
    return x
