"""e2e: plain backpropagation through all unrolls (activation memory grows with N)."""
from __future__ import annotations

from .base import Strategy, register_strategy


class EndToEnd(Strategy):
    """Backpropagation through all unrolls."""

    name = "e2e"

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward):
        loss = loss_fn(net(kspace, maps, mask), target)
        backward(loss)
        return {"loss": float(loss.detach())}


register_strategy("e2e", EndToEnd)
