"""Optimizers and learning-rate schedules: built here only, for every strategy and every trainer (Lightning's
and the pipeline's). One Adam per parameter group: a strategy with several groups (GLEAM: one per module)
steps them independently (GLEAM's released configs: Adam, lr 1e-4, weight decay 1e-4, no schedule)."""
from __future__ import annotations

import torch

from ..config import TrainConfig


def adam_per_group(groups: list[list[torch.nn.Parameter]], lr: float, weight_decay: float) -> list[torch.optim.Adam]:
    """One Adam per parameter group."""
    return [torch.optim.Adam(g, lr=lr, weight_decay=weight_decay) for g in groups]


def build_optimizers(t: TrainConfig, groups: list[list[torch.nn.Parameter]]) -> tuple[list, list]:
    """One Adam per parameter group (one per GLEAM module) and, when configured, one scheduler each."""
    optimizers = adam_per_group(groups, t.lr, t.weight_decay)
    if not t.scheduler:
        return optimizers, []
    name = t.scheduler.get("name")
    if name == "step":
        return optimizers, [torch.optim.lr_scheduler.StepLR(o, step_size=t.scheduler.get("step_size", 10),
                                                            gamma=t.scheduler.get("gamma", 0.5)) for o in optimizers]
    if name == "cosine":
        return optimizers, [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=t.max_epochs) for o in optimizers]
    raise ValueError(f"train.scheduler.name: unknown scheduler {name!r} (step, cosine)")
