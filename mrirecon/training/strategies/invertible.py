"""invertible: memory-efficient learning (MEL): no stored activations, inputs rebuilt by inverting unrolls."""
from __future__ import annotations

from ..invertible import InversionSettings, backward_by_inversion, forward_without_activations
from .base import Strategy, register_strategy
from ...models.unrolled import UnrolledNet


class Invertible(Strategy):
    """MEL: forward without activations, backward by inverting unrolls (see training/invertible.py).

    Returns "inversion_error": by default the worst relative consistency ||unroll(rebuilt input) - output||
    / ||output|| over unrolls; with debug=True the forward keeps every unroll's input (memory O(N), for
    measurement only) and "inversion_error" is the worst relative error of the rebuilt inputs, with the
    consistency reported as "inversion_consistency".
    """

    name = "invertible"

    def __init__(self, net: UnrolledNet, prox_iters: int = 100, prox_tol: float = 1e-6, inverse_cg_iters: int = 100,
                 inverse_cg_tol: float = 1e-7, debug: bool = False):
        super().__init__(net)
        prox = next((u.prox for u in net.unrolls if hasattr(u, "prox")), None)
        if prox is not None and not getattr(prox, "is_invertible", False):
            from ...models.registry import not_invertible_message

            raise ValueError(f"strategy 'invertible' needs an invertible prox; {not_invertible_message(prox)}")
        if net.dc == "pgd" and (net.step_size_max is None or net.step_size_max > 1):
            raise ValueError("strategy 'invertible' with dc: pgd needs step_size_max <= 1 (the gradient step is "
                             "invertible for 0 < alpha < 1/||A^H A||, and ||A^H A|| <= 1 for ESPIRiT maps with unit "
                             f"sum of squares and a 0/1 mask); got step_size_max={net.step_size_max}")
        if not net.is_invertible:
            raise ValueError("strategy 'invertible': some unrolls of the network are not invertible")
        self.settings = InversionSettings(prox_iters, prox_tol, inverse_cg_iters, inverse_cg_tol)
        self.debug = debug

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward):
        A = net.sense(maps, mask)
        x, inputs = forward_without_activations(net, A, kspace, keep_inputs=self.debug)
        out = x.detach().requires_grad_(True)
        loss = loss_fn(out, target)
        backward(loss)
        if out.grad is None:
            raise RuntimeError("strategy 'invertible': the loss has no gradient with respect to the output")
        report = backward_by_inversion(net, A, kspace, out.detach(), out.grad, self.settings, inputs)
        result = {"loss": float(loss.detach())}
        if report.input_error is None:
            result["inversion_error"] = report.consistency
        else:
            result["inversion_error"] = report.input_error
            result["inversion_consistency"] = report.consistency
        return result


register_strategy("invertible", Invertible, options="invertible")
