"""Peak-memory accounting of a training step, and how each strategy's memory scales with the unrolls."""
from __future__ import annotations

import pytest
import torch

from mrirecon.models import UnrolledNet
from mrirecon.physics import SenseOp
from mrirecon.training import build_strategy, default_optimizers
from mrirecon.training.memory import LiveTensorMeter, SavedTensorMeter, measure_step_memory, peak_rss_mib


RESNET = {"name": "resnet", "channels": 8, "num_blocks": 2}
MIB = 2**20


def test_saved_tensors_are_counted_once_per_storage_and_released_after_backward():
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter() as meter:
        y = x.exp()  # saves its result y (4000 bytes)
        z = y.sin()  # saves its input: the same storage as y
        assert meter.current == 4000
        w = (z * 2).cos()  # saves z * 2 (4000 more bytes); multiplying by a constant saves nothing
        assert meter.current == 8000
        w.sum().backward()
    assert meter.peak == 8000 and meter.current == 0


def test_excluded_tensors_are_not_counted_as_activations():
    layer = torch.nn.Linear(100, 100, bias=False)
    x = torch.randn(10, 100)
    with SavedTensorMeter(exclude=[*layer.parameters(), x]) as meter:
        layer(x).relu().sum().backward()  # linear saves x and the weight; relu saves its output
    assert meter.peak == 10 * 100 * 4


def test_live_meter_counts_new_storages_until_freed():
    with LiveTensorMeter() as meter:
        a = torch.ones(1000)
        b = a + 1
        view = b[10:]
        assert meter.current == 8000
        del a
        assert meter.current == 4000
        view.add_(1)  # in place: no new memory
        assert meter.current == 4000
        del b, view
    assert meter.peak == 8000 and meter.current == 0


def test_peak_rss_is_in_mib():
    with open("/proc/self/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    # The kernel's RSS counters are cached per CPU, so allow a little slack (a unit error is a factor 1024).
    assert 0.9 * rss_kib / 1024 <= peak_rss_mib() < 64 * 1024


def _batch(spatial=(16, 16), coils=4):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(1, 1, coils, *spatial, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().pow(2).sum(2, keepdim=True).sqrt()
    mask = (torch.rand(1, 1, 1, spatial[-1], generator=g) < 0.5).float()
    x = torch.randn(1, 1, *spatial, dtype=torch.complex64, generator=g)
    return SenseOp(maps, mask, 2)(x), maps, mask, x


def _loss(pred, target):
    return (pred.abs() - target.abs()).abs().mean()


def step_memory(strategy_name: str, num_unrolls: int, prox=RESNET, **cfg) -> dict[str, float]:
    """Memory of the second training step (the first creates the optimizer state)."""
    torch.manual_seed(0)
    net = UnrolledNet(num_unrolls, prox, "pgd", step_size_max=1.0)
    strategy = build_strategy(strategy_name, net, **cfg)
    optimizers = default_optimizers(strategy, net)
    batch = _batch()
    strategy.step(net, *batch, _loss, optimizers)
    return measure_step_memory(lambda: strategy.step(net, *batch, _loss, optimizers), [net], optimizers, batch)


def test_step_memory_reports_parameters_gradients_and_adam_state():
    torch.manual_seed(0)
    net = UnrolledNet(2, RESNET, "pgd")
    param_bytes = sum(p.numel() * 4 for p in net.parameters())
    m = step_memory("e2e", 2)
    assert m["params_mib"] == m["grads_mib"] == pytest.approx(param_bytes / MIB)
    # Adam keeps two moments per parameter plus a scalar step count per tensor.
    n_tensors = len(list(net.parameters()))
    assert m["optimizer_state_mib"] == pytest.approx((2 * param_bytes + 4 * n_tensors) / MIB)
    assert m["peak_mib"] > m["params_mib"] + m["optimizer_state_mib"] + m["peak_saved_mib"]


def test_e2e_activations_grow_with_the_number_of_unrolls():
    two, four = step_memory("e2e", 2), step_memory("e2e", 4)
    assert four["peak_saved_mib"] / two["peak_saved_mib"] == pytest.approx(2.0, rel=0.1)


def test_gleam_activations_are_those_of_one_module():
    one_per_module = [step_memory("gleam", n, num_modules=n)["peak_saved_mib"] for n in (2, 4)]
    assert one_per_module[1] == pytest.approx(one_per_module[0], rel=0.02)
    e2e_two = step_memory("e2e", 2)["peak_saved_mib"]
    assert one_per_module[0] < 0.6 * e2e_two


def test_invertible_activations_are_constant_in_the_number_of_unrolls():
    prox = {**RESNET, "lipschitz": 0.9}
    two, four = (step_memory("invertible", n, prox)["peak_saved_mib"] for n in (2, 4))
    assert four == pytest.approx(two, rel=0.02)


def test_checkpoint_holds_less_than_e2e_in_all_allocations():
    """What checkpointing stores is invisible to saved-tensor hooks (it installs its own), not to the live count."""
    e2e, ckpt = step_memory("e2e", 4), step_memory("checkpoint", 4)
    assert ckpt["peak_live_mib"] < 0.75 * e2e["peak_live_mib"]
