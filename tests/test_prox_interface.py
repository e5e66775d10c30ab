"""The prox interface: a prox registered outside the library trains under every strategy, prepares through
`prepare_all`, inverts for MEL when it declares an inverse, and refuses what it cannot do at config time."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mrirecon.config import ConfigError, load_config
from mrirecon.models import ProxNet, UnrolledNet, build_network, build_prox, register_prox, registry
from mrirecon.training import build_strategy, default_optimizers
from problems import l1_magnitude, sense_problem


@pytest.fixture
def plugin_registry(monkeypatch):
    """A private copy of the registry, so the kinds registered here vanish after each test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_NAMES", dict(registry._NAMES))
    monkeypatch.setattr(registry, "_RENAMED", dict(registry._RENAMED))


def register_pointwise(prepare_log: list | None = None, invertible: bool = True) -> type:
    """z = x + 0.5 tanh(a) tanh(tanh(b) x) per channel: |dz/dx - 1| <= 0.5, so x <- z - f(x) contracts."""

    @register_prox("pointwise")
    class Pointwise(ProxNet):
        is_invertible = invertible
        invertible_when = "always" if invertible else None
        supported_conv_dims = (2,)

        def __init__(self, in_channels: int, conv_dims: int, gain: float = 0.5):
            super().__init__()
            if not 0 < gain < 1:
                raise ValueError(f"pointwise prox: gain must be in (0, 1), got {gain!r}")
            self.gain = gain
            self.a = nn.Parameter(torch.full((in_channels, 1, 1), 0.3))
            self.b = nn.Parameter(torch.full((in_channels, 1, 1), 0.7))

        def residual(self, x: Tensor) -> Tensor:
            return self.gain * torch.tanh(self.a) * torch.tanh(torch.tanh(self.b) * x)

        def forward(self, x: Tensor) -> Tensor:
            return x + self.residual(x)

        @classmethod
        def prepare_all(cls, proxes):
            if prepare_log is not None:
                prepare_log.append(len(proxes))

        @torch.no_grad()
        def inverse(self, z: Tensor, iters: int = 100, tol: float = 1e-6) -> tuple[Tensor, float]:
            x = z
            for _ in range(iters):
                x = z - self.residual(x)
            return x, float((self(x) - z).norm() / z.norm())

    return Pointwise


@pytest.mark.parametrize("strategy", ["e2e", "checkpoint", "gleam", "invertible"])
def test_a_prox_registered_outside_the_library_trains_under_every_strategy(plugin_registry, strategy):
    register_pointwise()
    torch.manual_seed(0)
    net = UnrolledNet(2, {"name": "pointwise"}, dc="modl", cg_iters=20)
    before = [p.detach().clone() for p in net.parameters()]
    s = build_strategy(strategy, net)
    y, maps, mask, x = sense_problem()
    losses = s.step(net, y, maps, mask, x, l1_magnitude, default_optimizers(s, net, lr=1e-2))
    assert torch.isfinite(torch.tensor(losses["loss"]))
    # Every parameter of every unroll moved: the gradients reached the plug-in prox under this strategy.
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    if strategy == "invertible":
        assert losses["inversion_error"] < 1e-4


def test_prepare_goes_through_prepare_all_once_per_class_with_every_distinct_prox(plugin_registry):
    log: list[int] = []
    register_pointwise(log)
    net = UnrolledNet(3, {"name": "pointwise"})
    net.prepare()
    net.prepare([2])
    shared = UnrolledNet(3, {"name": "pointwise"}, share_weights=True)
    shared.prepare()
    assert log == [3, 1, 1]  # a shared prox is prepared once


def test_a_prox_without_an_inverse_is_refused_by_name_under_invertible(plugin_registry):
    register_pointwise(invertible=False)
    net = UnrolledNet(2, {"name": "pointwise"}, dc="modl")
    with pytest.raises(ValueError, match="strategy 'invertible' needs an invertible prox; prox 'pointwise' is not "
                                         "invertible; invertible kinds: resnet"):
        build_strategy("invertible", net)
    with pytest.raises(ValueError, match="prox 'pointwise' is not invertible"):
        net.unrolls[0].inverse(torch.zeros(1, 1, 4, 4, dtype=torch.complex64), None, None)


def test_an_unsupported_image_layout_is_a_config_error_naming_the_prox(plugin_registry):
    register_pointwise()
    with pytest.raises(ConfigError, match=r"model.prox: prox 'pointwise' supports conv_dims \[2\] .*not "
                                          r"conv_dims=3 \(3D volumes and cine\)"):
        load_config(None, ["data.kind=cine", "model.prox={name: pointwise}"])
    with pytest.raises(ValueError, match="conv_dims=3"):
        build_prox({"name": "pointwise"}, 2, 3)
    assert load_config(None, ["data.kind=knee2d", "model.prox={name: pointwise}"]).model.prox["name"] == "pointwise"


def test_a_setting_the_constructor_refuses_is_a_config_error_when_the_network_is_built(plugin_registry):
    register_pointwise()
    cfg = load_config(None, ["model.prox={name: pointwise, gain: 2}"])  # values are the constructor's to check
    with pytest.raises(ConfigError, match=r"^model: pointwise prox: gain must be in \(0, 1\), got 2"):
        build_network(cfg)
