"""Non-finite guard: a NaN or Inf loss or gradient stops training at once, naming where it happened.

Diverging training (too large a learning rate, a bad batch) otherwise runs on silently: the weights
turn NaN, validation scores NaN, and a NaN epoch can still be recorded as "best". The guard checks
each loss before its backward and each gradient before its optimizer step, so the weights are never
updated from a non-finite value. `train.nonfinite` chooses what happens then:

    stop  (default) raise NonFiniteError naming the training step (batch count), the GLEAM module
          (1-based; "network" for strategies with one optimizer), the quantity and its value
    skip  leave that optimizer step out (the module's weights keep their previous values), count it
          in `FiniteGuard.skipped`, and go on

`check_finite` is the plain-function form, for trainers outside Lightning (the pipeline stages).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

MODES = ("stop", "skip")


class NonFiniteError(FloatingPointError):
    """A non-finite loss, gradient or validation score; the message names the step, module and value."""

    def __init__(self, what: str, value: float, step: int | None = None, module: int | None = None,
                 validation: bool = False):
        self.what, self.value, self.step, self.module = what, value, step, module
        where = "network" if module is None else f"module {module}"
        if validation:
            at = "" if step is None else f" after training step {step}"
            done = "the weights give a non-finite validation score; this state is not kept as best"
        else:
            at = "" if step is None else f" at training step {step}"
            done = "training stopped before the optimizer step, the weights were not updated from it"
        super().__init__(f"non-finite {what} = {value}{at} ({where}); {done}. Lower train.lr, check the data, "
                         "or set train.nonfinite=skip to leave such steps out")


def _as_float(value: Any) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


def first_nonfinite_grad(params: Iterable[torch.nn.Parameter]) -> tuple[str, float] | None:
    """(description, value) of the first non-finite gradient entry, or None when all are finite."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return None
    # One fused reduction over all gradients (a sync per step, not per parameter).
    if bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all()):
        return None
    for i, p in enumerate(params):
        bad = ~torch.isfinite(p.grad)
        if bad.any():
            value = p.grad[bad].flatten()[0]
            value = complex(value) if value.is_complex() else float(value)
            return f"gradient (parameter {i}, shape {tuple(p.shape)})", value
    return None


def check_finite(losses: Mapping[str, Any], step: int | None = None,
                 params: Iterable[torch.nn.Parameter] | None = None, module: int | None = None) -> None:
    """Raise NonFiniteError for the first non-finite entry of `losses` (floats or scalar tensors), then
    for the first non-finite gradient of `params` (if given). `step` and `module` go into the message."""
    for name, value in losses.items():
        v = _as_float(value)
        if not math.isfinite(v):
            raise NonFiniteError(f"loss {name!r}", v, step, module)
    if params is not None:
        bad = first_nonfinite_grad(params)
        if bad is not None:
            raise NonFiniteError(bad[0], bad[1], step, module)


class _GuardedOptimizer:
    """An optimizer whose step() first checks its gradients (stop: raise; skip: drop the step)."""

    def __init__(self, optimizer: Any, guard: "FiniteGuard", module: int | None):
        self._opt, self._guard, self._module = optimizer, guard, module

    def step(self, *args, **kwargs):
        params = [p for g in self._opt.param_groups for p in g["params"]]
        if self._guard.module_failed(self._module, params):
            self._opt.zero_grad(set_to_none=True)
            return None
        return self._opt.step(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # zero_grad, param_groups, state, ...
        return getattr(self._opt, name)


class FiniteGuard:
    """Wraps one training step's `backward` and optimizers so that every loss and gradient is checked.

    For a strategy with several optimizers (GLEAM) optimizer k is module k+1, and the k-th backward
    belongs to module k+1 (modules are trained in order).
    """

    def __init__(self, mode: str = "stop", step: int | None = None):
        if mode not in MODES:
            raise ValueError(f"train.nonfinite: {mode!r} is not one of {list(MODES)}")
        self.mode, self.step, self.skipped = mode, step, 0
        self._backwards, self._modules = 0, 1
        self._bad_modules: set[int | None] = set()

    def _fail(self, error: NonFiniteError, module: int | None) -> bool:
        if self.mode == "stop":
            raise error
        self._bad_modules.add(module)
        return True

    def backward(self, fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        def guarded(loss: torch.Tensor):
            self._backwards += 1
            module = self._backwards if self._modules > 1 else None
            value = _as_float(loss)
            if not math.isfinite(value):
                self._fail(NonFiniteError("loss", value, self.step, module), module)
                return None  # skip: no backward, no gradients, the optimizer step is dropped
            return fn(loss)
        return guarded

    def optimizers(self, optimizers: Sequence[Any]) -> list[Any]:
        self._modules = len(optimizers)
        return [_GuardedOptimizer(o, self, k if len(optimizers) > 1 else None)
                for k, o in enumerate(optimizers, start=1)]

    def module_failed(self, module: int | None, params: Sequence[torch.nn.Parameter]) -> bool:
        """True when this module's step must be dropped (skip mode); raises in stop mode."""
        if module in self._bad_modules:
            self.skipped += 1
            return True
        bad = first_nonfinite_grad(params)
        if bad is not None:
            self._fail(NonFiniteError(bad[0], bad[1], self.step, module), module)
            self.skipped += 1
            return True
        return False


__all__ = ["MODES", "NonFiniteError", "check_finite", "first_nonfinite_grad", "FiniteGuard"]
