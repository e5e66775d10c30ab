"""Four ways to compute a training step of the same unrolled network.

    e2e         plain backpropagation through all unrolls (activation memory grows with N)
    checkpoint  gradient checkpointing per unroll (stores unroll inputs, recomputes each unroll once)
    invertible  memory-efficient learning: no stored activations, inputs rebuilt by inverting unrolls
    gleam       Greedy LEarning for Accelerated MRI (Ozturkler et al. 2022): N unrolls in M modules of
                N/M, each module trained on the image loss from the detached output of the previous one,
                with its own optimizer; activation memory is that of one module

Plain PyTorch: `step` zeroes the gradients, runs forward and backward and steps the optimizers, so a
LightningModule with manual optimisation can call it (passing `self.manual_backward` as `backward`).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..models.unrolled import UnrolledNet
from .invertible import InversionSettings, backward_by_inversion, forward_without_activations

LossFn = Callable[[Tensor, Tensor], Tensor]
Backward = Callable[[Tensor], Any]


def _plain_backward(loss: Tensor) -> None:
    loss.backward()


def _unique(params: Any) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        if p.requires_grad:
            seen.setdefault(id(p), p)
    return list(seen.values())


def train_greedy_module(net: UnrolledNet, indices: range, x_in: Tensor, A: Any, kspace: Tensor, target: Tensor,
                        loss_fn: LossFn, optimizer: torch.optim.Optimizer, backward: Backward = _plain_backward,
                        before_step: Callable[[Tensor], Any] | None = None) -> tuple[Tensor, Tensor]:
    """Train one GLEAM module (unrolls `indices`) on one batch: forward from the detached input image, the
    image loss against the target, backward, optimizer step. Returns (detached output image, detached loss).

    The output is computed with the weights before this step, as in GLEAM: it is what the next module
    trains on. `before_step(loss)` runs between backward and the step (data-parallel gradient averaging,
    the non-finite guard). Single-process GLEAM and every pipeline stage call this one function.
    """
    optimizer.zero_grad(set_to_none=True)
    x = net.apply_unrolls(x_in.detach(), A, kspace, indices)
    loss = loss_fn(x, target)
    backward(loss)
    if before_step is not None:
        before_step(loss.detach())
    optimizer.step()
    return x.detach(), loss.detach()


def greedy_modules(num_unrolls: int, num_modules: int) -> list[range]:
    """GLEAM's split: unroll indices of M modules of N/M consecutive unrolls each."""
    if not isinstance(num_modules, int) or isinstance(num_modules, bool) or num_modules < 1:
        raise ValueError(f"gleam: num_modules must be an integer >= 1, got {num_modules!r}")
    if num_unrolls % num_modules:
        raise ValueError(f"gleam: num_modules={num_modules} must divide num_unrolls={num_unrolls}")
    size = num_unrolls // num_modules
    return [range(k * size, (k + 1) * size) for k in range(num_modules)]


class Strategy:
    """How a training step is computed. Build with :func:`build_strategy`; settings are checked there."""

    name = ""

    def __init__(self, net: UnrolledNet):
        if not isinstance(net, UnrolledNet):
            raise TypeError(f"strategy {self.name!r} trains an UnrolledNet, got {type(net).__name__}")

    def param_groups(self, net: UnrolledNet) -> list[list[nn.Parameter]]:
        """Parameters per optimizer (one optimizer per group)."""
        return [_unique(net.parameters())]

    def exits(self, net: UnrolledNet) -> list[int]:
        """Unroll counts after which an output is trained (anytime reconstruction for gleam)."""
        return [net.num_unrolls]

    def step(self, net: UnrolledNet, kspace: Tensor, maps: Tensor, mask: Tensor, target: Tensor,
             loss_fn: LossFn, optimizers: Sequence[torch.optim.Optimizer],
             backward: Backward = _plain_backward) -> dict[str, float]:
        """One training step on a batch; returns the losses (floats)."""
        self._check_optimizers(net, optimizers)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        out = self._forward_backward(net, kspace, maps, mask, target, loss_fn, backward)
        for opt in optimizers:
            opt.step()
        return out

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward) -> dict[str, float]:
        raise NotImplementedError

    def _check_optimizers(self, net: UnrolledNet, optimizers: Sequence[Any]) -> None:
        expected = len(self.param_groups(net))
        if len(optimizers) != expected:
            raise ValueError(f"strategy {self.name!r} needs {expected} optimizer(s) (one per parameter group), "
                             f"got {len(optimizers)}")


class EndToEnd(Strategy):
    """Backpropagation through all unrolls."""

    name = "e2e"

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward):
        loss = loss_fn(net(kspace, maps, mask), target)
        backward(loss)
        return {"loss": float(loss.detach())}


def _checkpointed(unroll: nn.Module, x: Tensor, A: Any, y: Tensor) -> Tensor:
    # use_reentrant=False: the reentrant variant gives no parameter gradients when the
    # checkpoint's input (here the zero-filled image) does not require grad.
    return checkpoint(unroll, x, A, y, use_reentrant=False)


class Checkpointed(Strategy):
    """Gradient checkpointing per unroll: only unroll inputs are stored; each unroll is recomputed in backward."""

    name = "checkpoint"

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward):
        A = net.sense(maps, mask)
        x = net.apply_unrolls(A.H(kspace), A, kspace, range(net.num_unrolls), run=_checkpointed)
        loss = loss_fn(x, target)
        backward(loss)
        return {"loss": float(loss.detach())}


class Invertible(Strategy):
    """MEL: forward without activations, backward by inverting unrolls (see training/invertible.py).

    Returns "inversion_error": by default the worst relative consistency ||unroll(rebuilt input) - output||
    / ||output|| over unrolls; with debug=True the forward keeps every unroll's input (memory O(N), for
    measurement only) and "inversion_error" is the worst relative error of the rebuilt inputs, with the
    consistency reported as "inversion_consistency".
    """

    name = "invertible"

    def __init__(self, net: UnrolledNet, prox_iters: int = 100, prox_tol: float = 1e-6, cg_iters: int = 100,
                 cg_tol: float = 1e-7, debug: bool = False):
        super().__init__(net)
        prox = next((u.prox for u in net.unrolls if hasattr(u, "prox")), None)
        if prox is not None and not getattr(prox, "is_invertible", False):
            from ..models.registry import not_invertible_message

            raise ValueError(f"strategy 'invertible' needs an invertible prox; {not_invertible_message(prox)}")
        if net.dc == "pgd" and (net.step_size_max is None or net.step_size_max > 1):
            raise ValueError("strategy 'invertible' with dc: pgd needs step_size_max <= 1 (the gradient step is "
                             "invertible for 0 < alpha < 1/||A^H A||, and ||A^H A|| <= 1 for ESPIRiT maps with unit "
                             f"sum of squares and a 0/1 mask); got step_size_max={net.step_size_max}")
        if not net.is_invertible:
            raise ValueError("strategy 'invertible': some unrolls of the network are not invertible")
        self.settings = InversionSettings(prox_iters, prox_tol, cg_iters, cg_tol)
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


class Greedy(Strategy):
    """GLEAM: every module minimises the image loss from the detached output of the previous module."""

    name = "gleam"

    def __init__(self, net: UnrolledNet, num_modules: int | None = None):
        super().__init__(net)
        # Default: one unroll per module (GLEAM's knee configuration).
        num_modules = net.num_unrolls if num_modules is None else num_modules
        self.num_modules = num_modules
        self.modules = greedy_modules(net.num_unrolls, num_modules)
        if net.share_weights and num_modules > 1:
            raise ValueError(f"strategy 'gleam' with num_modules={num_modules} needs share_weights: false "
                             "(modules sharing weights would not be trained independently)")
        groups = self.param_groups(net)
        if len({id(p) for g in groups for p in g}) != sum(len(g) for g in groups):
            raise ValueError("strategy 'gleam': some parameters belong to several modules")

    def param_groups(self, net: UnrolledNet) -> list[list[nn.Parameter]]:
        return [_unique(p for i in idx for p in net.unrolls[i].parameters()) for idx in self.modules]

    def exits(self, net: UnrolledNet) -> list[int]:
        return [idx.stop for idx in self.modules]

    def step(self, net: UnrolledNet, kspace: Tensor, maps: Tensor, mask: Tensor, target: Tensor,
             loss_fn: LossFn, optimizers: Sequence[torch.optim.Optimizer],
             backward: Backward = _plain_backward) -> dict[str, float]:
        """For each module in turn: forward from the detached input, loss, backward, optimizer step."""
        self._check_optimizers(net, optimizers)
        x = None
        losses: dict[str, float] = {}
        for k, (idx, opt) in enumerate(zip(self.modules, optimizers), start=1):
            # Each module rebuilds the physics from the batch, so modules stay independent (e.g. on
            # different devices); module 1 starts from the zero-filled image.
            A = net.sense(maps, mask)
            x, loss = train_greedy_module(net, idx, A.H(kspace) if x is None else x, A, kspace, target, loss_fn,
                                          opt, backward)
            losses[f"loss_module{k}"] = float(loss)
        losses["loss"] = losses[f"loss_module{len(self.modules)}"]
        return losses


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (EndToEnd, Checkpointed, Invertible, Greedy)}


def build_strategy(name: str, net: UnrolledNet, **cfg: Any) -> Strategy:
    """Build a strategy by name; unknown names, unknown options and impossible settings raise ValueError."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "net"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"strategy {name!r}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(net, **cfg)


def default_optimizers(strategy: Strategy, net: UnrolledNet, lr: float = 1e-4,
                       weight_decay: float = 1e-4) -> list[torch.optim.Optimizer]:
    """One Adam per parameter group (GLEAM's settings: lr 1e-4, weight decay 1e-4)."""
    return [torch.optim.Adam(group, lr=lr, weight_decay=weight_decay) for group in strategy.param_groups(net)]
