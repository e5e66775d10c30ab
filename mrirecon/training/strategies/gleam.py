"""gleam: Greedy LEarning for Accelerated MRI (Ozturkler et al. 2022): N unrolls in M modules of N/M, each
module trained on the image loss from the detached output of the previous one, with its own optimizer;
activation memory is that of one module. gleam_pipeline: the same training, one stage process per group of
modules (distributed/pipeline.py, launched by torchrun)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ...models.unrolled import UnrolledNet
from .base import Backward, LossFn, Strategy, _plain_backward, register_strategy, unique_parameters


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


def module_parameters(net: UnrolledNet, indices: range) -> list[nn.Parameter]:
    """The trainable parameters of one GLEAM module (unrolls `indices`): one optimizer's group, in one
    process (Gleam.param_groups) and in a pipeline stage alike."""
    return unique_parameters(p for i in indices for p in net.unrolls[i].parameters())


class Gleam(Strategy):
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
        return [module_parameters(net, idx) for idx in self.modules]

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


register_strategy("gleam", Gleam, modules=True)
register_strategy("gleam_pipeline", Gleam, modules=True, trains_as="gleam", distributed=True)
