"""Data parallelism for strategies that take several backward passes per step (GLEAM) or write their own
backward (MEL): replicas average their gradients right before every optimizer step.

DDP's reducer assumes one backward per forward covering all parameters; GLEAM runs one backward per
module and MEL a hand-written one, so mrirecon averages gradients itself, with one all-reduce of all of
an optimizer's gradients flattened together.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor


def data_parallel_world() -> int:
    """Number of data-parallel processes of the default group (1 when torch.distributed is not running)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(params: Iterable[Tensor], group: Any = None, extra: Tensor | None = None) -> None:
    """Replace each parameter's gradient by its mean over the group's processes (in place); `extra`, a
    scalar such as the loss, is averaged along in the same all-reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    pieces = [g.reshape(-1) for g in grads] + ([extra.reshape(1).to(grads[0].dtype)] if extra is not None and grads else [])
    if not pieces:
        return
    flat = torch.cat(pieces)
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    if extra is not None:
        extra.copy_(flat[-1])


class GradientAveraging:
    """An optimizer whose step() first averages its gradients over the data-parallel processes."""

    def __init__(self, optimizer: Any, group: Any = None):
        self._opt, self._group = optimizer, group

    def step(self, *args, **kwargs):
        average_gradients([p for g in self._opt.param_groups for p in g["params"]], self._group)
        return self._opt.step(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # zero_grad, param_groups, state, ...
        return getattr(self._opt, name)
