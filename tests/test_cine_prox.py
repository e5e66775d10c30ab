"""2D+t proxes (prox/spatiotemporal.py): what each convolution sees in time, the time axis setting, the
Lipschitz bound and inversion, and training under every strategy."""
import copy

import pytest
import torch

from mrirecon.models.registry import build_prox
from mrirecon.models.unrolled import UnrolledNet
from mrirecon.physics import SenseOp
from mrirecon.training.losses import l1_loss
from mrirecon.training.strategies import build_strategy, default_optimizers

T, H, W = 6, 12, 12


def _randomise(prox: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero weights everywhere (the output convs start at zero, i.e. the identity prox)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prox.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def _changed_frames(prox, x: torch.Tensor, frame: int) -> list[int]:
    """Frames of prox(x) that change when frame `frame` of x is perturbed (time on dim 2)."""
    y = x.clone()
    y[:, :, frame] += 1.0
    diff = (prox(y) - prox(x)).abs().amax(dim=(0, 1, 3, 4))
    return [t for t in range(x.shape[2]) if diff[t] > 1e-6]


def test_framewise_frame_sees_exactly_its_cyclic_neighbours():
    prox = build_prox({"name": "resnet_framewise", "channels": 4, "num_blocks": 1, "context": 1}, 2, 3)
    _randomise(prox)
    x = torch.randn(1, 2, T, H, W)
    # Frame 0 is a neighbour of frames T-1 (cyclic) and 1, and of itself: nothing else may change.
    assert _changed_frames(prox, x, 0) == [0, 1, T - 1]
    assert _changed_frames(prox, x, 3) == [2, 3, 4]


def test_framewise_without_context_is_one_2d_network_per_frame():
    prox = build_prox({"name": "resnet_framewise", "channels": 4, "num_blocks": 1, "context": 0}, 2, 3)
    _randomise(prox)
    x = torch.randn(1, 2, T, H, W)
    whole = prox(x)
    frame2 = prox(x[:, :, 2:3])  # the same network on frame 2 alone
    assert torch.allclose(whole[:, :, 2:3], frame2, atol=1e-6)


def test_2plus1d_temporal_reach_is_one_temporal_kernel_per_conv():
    # num_blocks 0: input conv and output conv, each with a temporal kernel of 3 -> reach of 2 frames.
    prox = build_prox({"name": "resnet_2plus1d", "channels": 4, "num_blocks": 0, "temporal_kernel_size": 3}, 2, 3)
    _randomise(prox)
    x = torch.randn(1, 2, T, H, W)
    assert _changed_frames(prox, x, 0) == [0, 1, 2]


def test_2plus1d_convolutions_are_factorised():
    prox = build_prox({"name": "resnet_2plus1d", "channels": 4, "num_blocks": 1, "kernel_size": 3,
                       "temporal_kernel_size": 5}, 2, 3)
    kernels = sorted({tuple(m.kernel_size) for m in prox.modules() if isinstance(m, torch.nn.Conv3d)})
    assert kernels == [(1, 3, 3), (5, 1, 1)]


@pytest.mark.parametrize("name", ["resnet_framewise", "resnet_2plus1d"])
def test_time_axis_moves_where_time_is_read(name):
    base = build_prox({"name": name, "channels": 4, "num_blocks": 1, "time_axis": 0}, 2, 3)
    _randomise(base)
    moved = copy.deepcopy(base)
    moved.time_axis = 2
    x = torch.randn(1, 2, T, H, W)
    # (B, C, T, H, W) read with time_axis 0 == (B, C, H, W, T) read with time_axis 2, axes moved back.
    assert torch.allclose(base(x), moved(x.movedim(2, 4)).movedim(4, 2), atol=1e-6)


@pytest.mark.parametrize("name", ["resnet_framewise", "resnet_2plus1d"])
def test_untrained_prox_is_the_identity(name):
    prox = build_prox({"name": name, "channels": 4}, 2, 3)
    x = torch.randn(1, 2, T, H, W)
    assert torch.equal(prox(x), x)


@pytest.mark.parametrize("cfg,match", [
    ({"name": "resnet_framewise"}, "supports conv_dims \\[3\\]"),
    ({"name": "resnet_2plus1d"}, "supports conv_dims \\[3\\]"),
])
def test_2d_images_are_refused_by_name(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_prox(cfg, 2, 2)


@pytest.mark.parametrize("cfg,match", [
    ({"name": "resnet_framewise", "time_axis": 3}, "time_axis must be 0, 1 or 2"),
    ({"name": "resnet_framewise", "kernel_size": 4}, "kernel_size must be odd"),
    ({"name": "resnet_2plus1d", "temporal_kernel_size": 2}, "temporal_kernel_size must be odd"),
    ({"name": "resnet_framewise", "context": -1}, "context must be an integer >= 0"),
    ({"name": "resnet_framewise", "lipschitz": 0}, "lipschitz must be a positive number"),
])
def test_bad_settings_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_prox(cfg, 2, 3)


def test_framewise_lipschitz_bound_holds_and_inverse_recovers_input():
    prox = build_prox({"name": "resnet_framewise", "channels": 4, "num_blocks": 1, "context": 1, "lipschitz": 0.9},
                      2, 3)
    _randomise(prox, seed=1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 1, 2, T, H, W, generator=g)
    with torch.no_grad():
        ratio = (prox.residual(x) - prox.residual(y)).norm() / (x - y).norm()
        assert ratio < 0.9
        z = prox(x)
        x_rec, residual = prox.inverse(z, iters=200, tol=1e-7)
    assert residual <= 1e-6
    assert torch.allclose(x_rec, x, atol=1e-5)


def _cine_batch(seed: int = 0, coils: int = 3):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(1, 1, coils, 1, H, W, dtype=torch.complex64, generator=g)
    maps = maps / (maps.abs() ** 2).sum(2, keepdim=True).sqrt()
    mask = (torch.rand(1, 1, T, 1, W, generator=g) < 0.4).float()
    mask[..., W // 2] = 1
    image = torch.randn(1, 1, T, H, W, dtype=torch.complex64, generator=g)
    full = SenseOp(maps, torch.ones(1), 2)(image)
    return full * mask, maps, mask, image


def _net(prox: dict, num_unrolls: int = 2, **kw) -> UnrolledNet:
    torch.manual_seed(0)
    net = UnrolledNet(num_unrolls, prox, conv_dims=3, fft_ndim=2, **kw)
    for u in net.unrolls:
        _randomise(u.prox, seed=3)
    return net


PROXES = [{"name": "resnet_framewise", "channels": 4, "num_blocks": 1},
          {"name": "resnet_2plus1d", "channels": 4, "num_blocks": 1},
          {"name": "resnet", "channels": 4, "num_blocks": 1}]


@pytest.mark.parametrize("prox", PROXES, ids=lambda p: p["name"])
def test_checkpoint_gives_the_e2e_gradients(prox):
    kspace, maps, mask, target = _cine_batch()
    grads = {}
    for strategy in ("e2e", "checkpoint"):
        net = _net(prox)
        s = build_strategy(strategy, net)
        opt = default_optimizers(s, net, lr=0.0)  # lr 0: keep the weights, look at the gradients
        s.step(net, kspace, maps, mask, target, l1_loss, opt)
        grads[strategy] = [p.grad.clone() for p in net.parameters()]
        assert all(g.abs().sum() > 0 for g in grads[strategy][:-1])  # every prox weight gets a gradient
    for a, b in zip(grads["e2e"], grads["checkpoint"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("prox", PROXES, ids=lambda p: p["name"])
def test_gleam_steps_every_module_and_lowers_the_loss(prox):
    kspace, maps, mask, target = _cine_batch()
    net = _net(prox)
    s = build_strategy("gleam", net, num_modules=2)
    opts = default_optimizers(s, net, lr=1e-2)
    before = [p.detach().clone() for p in net.parameters()]
    first = s.step(net, kspace, maps, mask, target, l1_loss, opts)
    assert set(first) == {"loss", "loss_module1", "loss_module2"}
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    for _ in range(4):
        last = s.step(net, kspace, maps, mask, target, l1_loss, opts)
    assert last["loss"] < first["loss"]


def test_invertible_trains_resnet_framewise_with_lipschitz_below_one():
    kspace, maps, mask, target = _cine_batch()
    torch.manual_seed(0)
    net = UnrolledNet(2, {"name": "resnet_framewise", "channels": 4, "num_blocks": 1, "lipschitz": 0.9}, conv_dims=3,
                      fft_ndim=2, step_size_max=1.0)
    s = build_strategy("invertible", net, prox_tol=1e-7, inverse_cg_tol=1e-8)
    out = s.step(net, kspace, maps, mask, target, l1_loss, default_optimizers(s, net, lr=0.0))
    grads_inv = [p.grad.clone() for p in net.parameters()]
    assert out["inversion_error"] < 1e-4
    e2e = build_strategy("e2e", net)
    e2e.step(net, kspace, maps, mask, target, l1_loss, default_optimizers(e2e, net, lr=0.0))
    for a, b in zip(grads_inv, net.parameters()):
        assert torch.allclose(a, b.grad, rtol=1e-3, atol=1e-5)


def test_invertible_refuses_2plus1d_naming_what_is_invertible():
    net = UnrolledNet(2, {"name": "resnet_2plus1d", "channels": 4}, conv_dims=3, fft_ndim=2, step_size_max=1.0)
    with pytest.raises(ValueError, match="prox 'resnet_2plus1d' is not invertible; "
                                         "invertible kinds: resnet .*resnet_framewise"):
        build_strategy("invertible", net)


def test_config_chooses_the_2d_t_prox_and_refuses_it_for_2d_data():
    from mrirecon.config import ConfigError, load_config
    from mrirecon.models.build import build_network

    cfg = load_config(None, ["data.kind=cine", "model.num_unrolls=1",
                             "model.prox={name: resnet_2plus1d, channels: 4, time_axis: 0}"])
    assert type(build_network(cfg).unrolls[0].prox).__name__ == "ResNet2Plus1dProx"
    with pytest.raises(ConfigError, match="model.prox: prox 'resnet_framewise' supports conv_dims \\[3\\]"):
        load_config(None, ["data.kind=knee2d", "model.prox={name: resnet_framewise}"])
