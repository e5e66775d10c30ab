"""Optimizers and learning-rate schedules: built here only, for every strategy and every trainer (Lightning's
and the pipeline's). One Adam per parameter group: a strategy with several groups (GLEAM: one per module)
steps them independently (GLEAM's released configs: Adam, lr 1e-4, weight decay 1e-4, no schedule).
`train.grad_clip_norm` clips each optimizer's gradients to that total norm (one GLEAM module's, the whole
network's otherwise) inside its step, so after the replicas' averaging and the non-finite check, which
wrap the step from outside."""
from __future__ import annotations

import torch

from ..config import TrainConfig


def adam_per_group(groups: list[list[torch.nn.Parameter]], lr: float, weight_decay: float) -> list[torch.optim.Adam]:
    """One Adam per parameter group."""
    return [torch.optim.Adam(g, lr=lr, weight_decay=weight_decay) for g in groups]


def clip_before_step(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the optimizer's gradients to total 2-norm `max_norm` at the start of each of its steps; the
    norm before clipping is kept in `optimizer.grad_norm` (a float, for logging; None before a step)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.grad_norm = None

    def hook(opt: torch.optim.Optimizer, args, kwargs) -> None:
        grads = [p for p in params if p.grad is not None]
        opt.grad_norm = float(torch.nn.utils.clip_grad_norm_(grads, max_norm)) if grads else None

    optimizer.register_step_pre_hook(hook)


def build_optimizers(t: TrainConfig, groups: list[list[torch.nn.Parameter]]) -> tuple[list, list]:
    """One Adam per parameter group (one per GLEAM module) and, when configured, one scheduler each."""
    optimizers = adam_per_group(groups, t.lr, t.weight_decay)
    if t.grad_clip_norm is not None:
        for o in optimizers:
            clip_before_step(o, t.grad_clip_norm)
    if not t.scheduler:
        return optimizers, []
    name = t.scheduler.get("name")
    if name == "step":
        return optimizers, [torch.optim.lr_scheduler.StepLR(o, step_size=t.scheduler.get("step_size", 10),
                                                            gamma=t.scheduler.get("gamma", 0.5)) for o in optimizers]
    if name == "cosine":
        return optimizers, [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t.max_epochs) for o in optimizers]
    raise ValueError(f"train.scheduler.name: unknown scheduler {name!r} (step, cosine)")
