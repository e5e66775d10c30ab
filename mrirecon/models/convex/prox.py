"""The convex dual denoiser as a proximal network: `model.prox: {name: convex_dual, weights: FILE}`.

The weights file (written by `mrirecon convex fit`) holds the network a convex solve mapped to
(`network.py`): the two-layer ReLU network of the exact ReLU program ("network": "relu") or the gated-ReLU
network of the gated program ("gated": fixed gates, trained filters). `predicts` says what it outputs:
    residual   z = x + net(x)   (it was fitted to target - input; the default)
    image      z = net(x)       (it was fitted to the target itself)
trainable: false  the solver's weights are fixed (requires_grad False): only the unrolls' step sizes train,
                  and the prox stays the global optimum of its own convex denoising problem;
trainable: true   the same architecture is fine-tuned inside the unrolls by backpropagation. The unrolled
                  network as a whole is then not convex: the solver's optimum is only the starting point.
Without `weights` (trainable only) the network starts from PyTorch's default initialisation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...atomic import atomic_path
from ..registry import ProxNet, check_input, register_prox
from .network import GatedReLUConv, TwoLayerReLUConv

FORMAT = "mrirecon.convex_dual/1"
PREDICTS = ("residual", "image")


NETWORKS = {"relu": TwoLayerReLUConv, "gated": GatedReLUConv}


def save_weights(path: str | os.PathLike, net: TwoLayerReLUConv | GatedReLUConv, predicts: str,
                 info: dict[str, Any]) -> Path:
    """Write the network and what produced it (solver report, settings) atomically."""
    if predicts not in PREDICTS:
        raise ValueError(f"convex_dual weights: predicts must be one of {PREDICTS}, got {predicts!r}")
    network = "gated" if isinstance(net, GatedReLUConv) else "relu"
    payload = {"format": FORMAT, "network": network, "channels": net.channels, "hidden": net.hidden,
               "kernel_size": net.kernel_size,
               "predicts": predicts, "state_dict": {k: v.detach().float().cpu() for k, v in net.state_dict().items()},
               "info": info}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prox convex_dual: weights file {str(path)!r} not found (model.prox.weights); write it with "
                         "`mrirecon convex fit --config CONFIG --out FILE`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for a corrupt or foreign file
        raise ValueError(f"prox convex_dual: cannot read weights file {str(path)!r} (model.prox.weights): "
                         f"{e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"prox convex_dual: {str(path)!r} is not a convex_dual weights file (model.prox.weights; "
                         f"expected format {FORMAT!r})")
    return payload


@register_prox("convex_dual")
class ConvexDualProx(ProxNet):
    """A two-layer ReLU conv denoiser fitted by a convex solver; real (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, in_channels: int, conv_dims: int = 2, weights: str | None = None, trainable: bool = False,
                 hidden: int = 32, kernel_size: int = 3, predicts: str = "residual"):
        super().__init__()
        if conv_dims != 2:
            raise ValueError(f"prox convex_dual: only 2D images (conv_dims=2) are supported, got conv_dims={conv_dims}")
        if not isinstance(trainable, bool):
            raise ValueError(f"prox convex_dual: trainable must be true or false, got {trainable!r}")
        if weights is None:
            if not trainable:
                raise ValueError("prox convex_dual: trainable: false needs weights (model.prox.weights) from "
                                 "`mrirecon convex fit`")
            if predicts not in PREDICTS:
                raise ValueError(f"prox convex_dual: predicts must be one of {PREDICTS}, got {predicts!r}")
            self.net = TwoLayerReLUConv(in_channels, hidden, kernel_size)
            self.predicts, self.info = predicts, {}
        else:
            payload = load_weights(weights)
            if payload["channels"] != in_channels:
                raise ValueError(f"prox convex_dual: {weights!r} was fitted for {payload['channels']} channels but the "
                                 f"network gives the prox {in_channels} (2 x model.num_maps)")
            network = NETWORKS[payload.get("network", "relu")]  # files from before "network" hold ReLU nets
            self.net = network(payload["channels"], payload["hidden"], payload["kernel_size"])
            self.net.load_state_dict(payload["state_dict"])
            self.predicts, self.info = payload["predicts"], payload.get("info", {})
        self.conv_dims, self.trainable = conv_dims, trainable
        self.net.requires_grad_(trainable)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_dims, "convex_dual prox")
        out = self.net(x)
        return x + out if self.predicts == "residual" else out
