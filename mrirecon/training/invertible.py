"""Memory-efficient learning (MEL; Kellman et al. 2020, Wang et al. MICCAI 2021) for unrolled networks.

The forward pass runs without autograd and keeps only the final output. The backward pass walks the
unrolls in reverse: it rebuilds each unroll's input from its output by inverting the unroll
(`Unroll.inverse`), re-runs that one unroll with autograd from the rebuilt input, and back-propagates
the incoming gradient into the unroll's parameters and its input. Activation memory is that of one
unroll, whatever the number of unrolls; the price is one inversion and one extra forward per unroll.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.unrolled import UnrolledNet
from ..physics import SenseOp


def _relative(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@dataclass
class InversionSettings:
    """Tolerances of the inversion: fixed-point iterations for the prox, CG for the PGD gradient step."""

    prox_iters: int = 100
    prox_tol: float = 1e-6
    cg_iters: int = 100
    cg_tol: float = 1e-7


@dataclass
class InversionReport:
    """consistency: max over unrolls of ||unroll(rebuilt input) - output|| / ||output|| (always measured);
    input_error: max over unrolls of ||rebuilt input - true input|| / ||true input|| (only with stored inputs)."""

    consistency: float = 0.0
    input_error: float | None = None
    per_unroll_consistency: list[float] = field(default_factory=list)


@torch.no_grad()
def forward_without_activations(net: UnrolledNet, A: SenseOp, kspace: Tensor,
                                keep_inputs: bool = False) -> tuple[Tensor, list[Tensor] | None]:
    """Run all unrolls without autograd; return the output (and, for debugging, every unroll's input)."""
    x = A.H(kspace)
    inputs: list[Tensor] | None = [x] if keep_inputs else None
    for _, x in net.iter_unrolls(x, A, kspace, range(net.num_unrolls)):
        if inputs is not None:
            inputs.append(x)
    if inputs is not None:
        inputs.pop()  # the last output is no unroll's input
    return x, inputs


def backward_by_inversion(net: UnrolledNet, A: SenseOp, kspace: Tensor, output: Tensor, grad_output: Tensor,
                          settings: InversionSettings = InversionSettings(),
                          true_inputs: list[Tensor] | None = None) -> InversionReport:
    """Accumulate d loss / d parameters into `.grad`, given the output and d loss / d output."""
    report = InversionReport()
    x_out, grad = output.detach(), grad_output
    errors = []
    for k in reversed(range(net.num_unrolls)):
        unroll = net.unrolls[k]
        x_in = unroll.inverse(x_out, A, kspace, prox_iters=settings.prox_iters, prox_tol=settings.prox_tol,
                              cg_iters=settings.cg_iters, cg_tol=settings.cg_tol)
        if true_inputs is not None:
            errors.append(_relative(x_in, true_inputs[k]))
        # The first unroll's input is the zero-filled image, a constant: no gradient needed for it.
        x_in = x_in.detach().requires_grad_(k > 0)
        with torch.enable_grad():
            x_re = unroll(x_in, A, kspace)
        report.per_unroll_consistency.insert(0, _relative(x_re.detach(), x_out))
        torch.autograd.backward(x_re, grad)
        grad = x_in.grad
        x_out = x_in.detach()
        del x_re  # free this unroll's graph before the next one is built
    report.consistency = max(report.per_unroll_consistency)
    report.input_error = max(errors) if errors else None
    return report
