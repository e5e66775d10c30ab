"""Image-domain training losses on complex images (B, M, *S)."""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from ..evaluation.metrics import SSIMLoss
from ..physics import rss

LossFn = Callable[[Tensor, Tensor], Tensor]


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean modulus of the complex error, |pred - target| (GLEAM's L1 on complex images; unlike an L1 of
    magnitudes, ||pred| - |target||, it also penalises phase errors)."""
    return (pred - target).abs().mean()


def l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    return ((pred - target).abs() ** 2).mean()


class SSIMImageLoss:
    """1 - SSIM of magnitude images (RSS over maps), per 2D slice / frame (7x7 uniform window)."""

    def __init__(self):
        self.ssim = SSIMLoss()

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        p = rss(pred, 1, eps=1e-12)  # eps: a finite gradient where the image is exactly zero
        t = rss(target, 1)
        return self.ssim(p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:]))


def build_loss(name: str) -> LossFn:
    if name == "l1":
        return l1_loss
    if name == "l2":
        return l2_loss
    if name == "ssim":
        return SSIMImageLoss()
    raise ValueError(f"unknown loss {name!r}; expected l1, l2 or ssim")
