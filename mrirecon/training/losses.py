"""Image-domain training losses on complex images (B, M, *S)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..evaluation.metrics import SSIMLoss

LossFn = Callable[[Tensor, Tensor], Tensor]


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean complex magnitude of the error, |pred - target| (GLEAM's L1 on complex images)."""
    return (pred - target).abs().mean()


def l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target).abs() ** 2).mean()


class SSIMImageLoss:
    """1 - SSIM of magnitude images (RSS over maps), per 2D slice / frame (7x7 uniform window)."""

    def __init__(self):
        self.ssim = SSIMLoss()

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        p = torch.sqrt((pred.abs() ** 2).sum(1) + 1e-12)
        t = torch.sqrt((target.abs() ** 2).sum(1))
        return self.ssim(p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:]))


def build_loss(name: str) -> LossFn:
    if name == "l1":
        return l1_loss
    if name == "l2":
        return l2_loss
    if name == "ssim":
        return SSIMImageLoss()
    raise ValueError(f"unknown loss {name!r}; expected l1, l2 or ssim")
