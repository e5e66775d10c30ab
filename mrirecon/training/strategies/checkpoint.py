"""checkpoint: gradient checkpointing per unroll (stores unroll inputs, recomputes each unroll once)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .base import Strategy, register_strategy


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


register_strategy("checkpoint", Checkpointed)
