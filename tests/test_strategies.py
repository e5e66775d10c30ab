"""Training strategies: e2e, checkpoint, invertible (MEL) and gleam on one network definition."""
from __future__ import annotations

import copy

import pytest
import torch

from mrirecon.models import UnrolledNet
from mrirecon.training import build_strategy, default_optimizers, greedy_modules
from problems import LAYOUTS, l1_magnitude, sense_problem

RESNET = {"name": "resnet", "channels": 8, "num_blocks": 2}
INVERTIBLE_RESNET = {**RESNET, "lipschitz": 0.9}


def make_batch(layout: str = "2d", coils: int = 4, seed: int = 0):
    return sense_problem(layout, coils, seed=seed)


def make_net(layout: str = "2d", dc: str = "pgd", prox=RESNET, num_unrolls: int = 2, seed: int = 0, **kw):
    _, conv_dims, fft_ndim = LAYOUTS[layout]
    torch.manual_seed(seed)
    return UnrolledNet(num_unrolls, prox, dc, conv_dims=conv_dims, fft_ndim=fft_ndim, **kw)


class GradientRecorder:
    """An optimizer stand-in that records the gradients it sees at each step and changes nothing."""

    def __init__(self, params):
        self.params = list(params)
        self.seen: list[list[torch.Tensor | None]] = []

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.seen.append([None if p.grad is None else p.grad.clone() for p in self.params])


def gradients(strategy_name: str, net: UnrolledNet, batch, **cfg) -> torch.Tensor:
    strategy = build_strategy(strategy_name, net, **cfg)
    recorders = [GradientRecorder(g) for g in strategy.param_groups(net)]
    strategy.step(net, *batch[:3], batch[3], l1_magnitude, recorders)
    assert all(p.grad is not None for p in net.parameters()), "every parameter must receive a gradient"
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- settings checked at build time


def test_unknown_strategy_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown strategy 'greedy'.*'checkpoint', 'e2e', 'gleam', 'gleam_pipeline', 'invertible'"):
        build_strategy("greedy", make_net())


def test_unknown_strategy_option_is_named():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['modules'\]"):
        build_strategy("gleam", make_net(), modules=2)


def test_gleam_modules_must_divide_unrolls():
    with pytest.raises(ValueError, match="num_modules=2 must divide num_unrolls=3"):
        build_strategy("gleam", make_net(num_unrolls=3), num_modules=2)


def test_gleam_rejects_shared_weights():
    with pytest.raises(ValueError, match="share_weights"):
        build_strategy("gleam", make_net(num_unrolls=2, share_weights=True), num_modules=2)


@pytest.mark.parametrize("prox", [RESNET, {"name": "unet", "channels": 4, "num_blocks": 1}], ids=["resnet", "unet"])
def test_invertible_rejects_a_prox_that_cannot_be_inverted(prox):
    with pytest.raises(ValueError, match="invertible prox.*lipschitz"):
        build_strategy("invertible", make_net(dc="modl", prox=prox))


def test_invertible_pgd_needs_a_bounded_step_size():
    with pytest.raises(ValueError, match="step_size_max"):
        build_strategy("invertible", make_net(dc="pgd", prox=INVERTIBLE_RESNET))


def test_step_needs_one_optimizer_per_group():
    net = make_net(num_unrolls=2)
    strategy = build_strategy("gleam", net, num_modules=2)
    with pytest.raises(ValueError, match="needs 2 optimizer"):
        strategy.step(net, *make_batch(), l1_magnitude, default_optimizers(build_strategy("e2e", net), net))


def test_parameter_groups_one_per_optimizer():
    net = make_net(num_unrolls=4)
    all_params = {id(p) for p in net.parameters()}
    for name in ("e2e", "checkpoint"):
        (group,) = build_strategy(name, net).param_groups(net)
        assert {id(p) for p in group} == all_params
    gleam = build_strategy("gleam", net, num_modules=2)
    groups = gleam.param_groups(net)
    assert [len(g) for g in groups] == [2 * len(list(net.unrolls[0].parameters()))] * 2
    assert set().union(*({id(p) for p in g} for g in groups)) == all_params
    assert gleam.exits(net) == [2, 4]
    optimizers = default_optimizers(gleam, net)
    assert len(optimizers) == 2
    assert all(o.defaults["lr"] == 1e-4 and o.defaults["weight_decay"] == 1e-4 for o in optimizers)


def test_grad_clip_norm_clips_each_optimizer_to_its_own_norm_before_adam_steps():
    from mrirecon.config import TrainConfig
    from mrirecon.training.optim import build_optimizers

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    (opt_a, opt_b), _ = build_optimizers(TrainConfig(lr=0.1, grad_clip_norm=0.5), [[a], [b]])
    a.grad, b.grad = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.1, 0.0])  # norms 5 and 0.1
    # Adam's bias-corrected first step moves by lr * sign-like g / |g|, so compare with Adam on the clipped
    # gradients at the second step, where the clipped scale shows in the moment estimates.
    ref_a = torch.nn.Parameter(torch.zeros(3))
    ref = torch.optim.Adam([ref_a], lr=0.1, weight_decay=1e-4)
    clipped = [torch.tensor([0.3, 0.0, 0.4]), torch.tensor([0.03, 0.0, 0.04])]  # the second one is not clipped
    for g, opt in zip([torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.03, 0.0, 0.04])], clipped):
        a.grad = g.clone()
        opt_a.step()
        ref_a.grad = opt.clone()
        ref.step()
    assert opt_a.grad_norm == pytest.approx(0.05)  # the last step's norm, before clipping (below 0.5: kept)
    assert torch.equal(a.data, ref_a.data)
    opt_b.step()
    assert opt_b.grad_norm == pytest.approx(0.1) and torch.equal(b.grad, torch.tensor([0.1, 0.0]))


def test_without_grad_clip_norm_optimizers_have_no_clipping_hook():
    from mrirecon.config import TrainConfig
    from mrirecon.training.optim import build_optimizers

    a = torch.nn.Parameter(torch.zeros(2))
    (opt,), _ = build_optimizers(TrainConfig(), [[a]])
    a.grad = torch.tensor([30.0, 40.0])
    opt.step()
    assert not hasattr(opt, "grad_norm") and torch.equal(a.grad, torch.tensor([30.0, 40.0]))


def test_greedy_split_is_consecutive_unrolls():
    assert greedy_modules(6, 3) == [range(0, 2), range(2, 4), range(4, 6)]
    assert greedy_modules(4, 4) == [range(i, i + 1) for i in range(4)]


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("dc", ["pgd", "modl"])
def test_checkpoint_gradients_equal_e2e(dc):
    batch = make_batch()
    net = make_net(dc=dc, num_unrolls=3)
    reference = gradients("e2e", net, batch)
    assert relative(gradients("checkpoint", net, batch), reference) < 1e-6


@pytest.mark.parametrize("dc", ["pgd", "modl"])
def test_invertible_gradients_equal_e2e(dc):
    batch = make_batch()
    net = make_net(dc=dc, prox=INVERTIBLE_RESNET, num_unrolls=3, step_size_max=1.0, cg_iters=20)
    reference = gradients("e2e", net, batch)
    assert relative(gradients("invertible", net, batch), reference) <= 1e-3


def test_invertible_reports_small_inversion_error_in_both_modes():
    batch = make_batch()
    net = make_net(dc="modl", prox=INVERTIBLE_RESNET, num_unrolls=3, cg_iters=20)
    for debug in (False, True):
        strategy = build_strategy("invertible", net, debug=debug)
        out = strategy.step(net, *batch, l1_magnitude, [GradientRecorder(net.parameters())])
        assert out["inversion_error"] < 1e-4
        assert ("inversion_consistency" in out) == debug


def test_invertible_inversion_error_exposes_an_unconverged_inverse():
    batch = make_batch()
    net = make_net(dc="modl", prox=INVERTIBLE_RESNET, num_unrolls=3, cg_iters=20)
    for debug in (False, True):
        strategy = build_strategy("invertible", net, prox_iters=1, debug=debug)
        out = strategy.step(net, *batch, l1_magnitude, [GradientRecorder(net.parameters())])
        assert out["inversion_error"] > 1e-3


# ---------------------------------------------------------------- gleam


def test_gleam_module_gradients_come_only_from_its_own_loss():
    batch = make_batch()
    net = make_net(num_unrolls=4)
    strategy = build_strategy("gleam", net, num_modules=2)
    recorders = [GradientRecorder(g) for g in strategy.param_groups(net)]
    strategy.step(net, *batch, l1_magnitude, recorders)
    # Module 1's gradient: that of module 1's own loss, nothing from module 2's.
    reference = copy.deepcopy(net)
    l1_magnitude(reference(*batch[:3], num_unrolls=2), batch[3]).backward()
    expected = [p.grad for i in range(2) for p in reference.unrolls[i].parameters()]
    (seen_module1,) = recorders[0].seen
    assert all(torch.allclose(g, e, atol=1e-7) for g, e in zip(seen_module1, expected))
    # Module 2's backward leaves module 1 untouched (still the gradients recorded at its step).
    assert all(torch.equal(p.grad, g) for p, g in zip(recorders[0].params, seen_module1))


def test_gleam_later_module_weights_do_not_change_earlier_updates():
    batch = make_batch()
    net_a = make_net(num_unrolls=2)
    net_b = copy.deepcopy(net_a)
    with torch.no_grad():
        for p in net_b.unrolls[1].parameters():
            p.mul_(1.5)
    for net in (net_a, net_b):
        strategy = build_strategy("gleam", net, num_modules=2)
        strategy.step(net, *batch, l1_magnitude, default_optimizers(strategy, net, lr=1e-2))
    for pa, pb in zip(net_a.unrolls[0].parameters(), net_b.unrolls[0].parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pb) for pa, pb in zip(net_a.unrolls[1].parameters(), net_b.unrolls[1].parameters()))


def test_gleam_updates_every_module_on_every_step():
    batch = make_batch()
    net = make_net(num_unrolls=3)
    strategy = build_strategy("gleam", net, num_modules=3)
    optimizers = default_optimizers(strategy, net, lr=1e-3)
    for step in range(1, 3):
        before = [p.detach().clone() for p in net.parameters()]
        strategy.step(net, *batch, l1_magnitude, optimizers)
        assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
        assert all(opt.state[opt.param_groups[0]["params"][0]]["step"] == step for opt in optimizers)


def test_gleam_module_losses_are_those_of_the_chain_before_the_step():
    """Module k starts from module k-1's output of this batch, computed before module k-1's update."""
    batch = make_batch()
    net = make_net(num_unrolls=3)
    before = copy.deepcopy(net)
    strategy = build_strategy("gleam", net, num_modules=3)
    losses = strategy.step(net, *batch, l1_magnitude, default_optimizers(strategy, net, lr=1e-2))
    with torch.no_grad():
        for k in (1, 2, 3):
            expected = float(l1_magnitude(before(*batch[:3], num_unrolls=k), batch[3]))
            assert losses[f"loss_module{k}"] == pytest.approx(expected, rel=1e-5)
    assert losses["loss"] == losses["loss_module3"]


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ["e2e", "checkpoint", "invertible", "gleam"])
def test_every_strategy_lowers_the_training_loss_of_the_same_network(name, layout):
    batch = make_batch(layout)
    net = make_net(layout, dc="pgd", prox=INVERTIBLE_RESNET, num_unrolls=2, step_size_max=1.0, step_size_init=0.5)
    strategy = build_strategy(name, net, **({"num_modules": 2} if name == "gleam" else {}))
    optimizers = default_optimizers(strategy, net, lr=3e-3)
    with torch.no_grad():
        start = float(l1_magnitude(net(*batch[:3]), batch[3]))
    for _ in range(8):  # GLEAM's L1 of the complex error (phase included) falls more slowly than one of magnitudes
        out = strategy.step(net, *batch, l1_magnitude, optimizers)
        assert torch.isfinite(torch.tensor(out["loss"]))
    with torch.no_grad():
        end = float(l1_magnitude(net(*batch[:3]), batch[3]))
    assert end < 0.9 * start
