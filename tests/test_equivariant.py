"""Equivariant proxes: scale-equivariant layers and bases, the scale_equivariant and rotation_equivariant
proxes, their equivariance errors, training under every strategy, and the settings they refuse."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrirecon.config import ConfigError, load_config
from mrirecon.evaluation.equivariance import (downscale, equivariance_errors, rotation_equivariance_error,
                                              scale_equivariance_error)
from mrirecon.models import UnrolledNet, build_prox
from mrirecon.models.equivariant import LiftingConv, ScaleConv, dilated_basis, hermite_basis, project_scales
from mrirecon.models.prox import RotationEquivariantProx, ScaleEquivariantProx
from mrirecon.models.prox import rotation_equivariant
from mrirecon.training import build_strategy, default_optimizers
from problems import l1_magnitude, sense_problem

SCALE = {"name": "scale_equivariant", "channels": 4}
SCALE_HERMITE = {"name": "scale_equivariant", "channels": 4, "basis": "hermite", "scales": [1, 1.41, 2],
                 "kernel_size": 5, "projection": "mean"}
ROTATION = {"name": "rotation_equivariant", "group": "d4", "channels": 8, "num_blocks": 1}


def smooth_image(channels: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth random real image (bicubic upsampling of 8 x 8 noise): what scale-equivariance is about."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(1, channels, 8, 8, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False)


def randomise_last_layer(prox: torch.nn.Module) -> None:
    """The proxes start as the identity (last layer zero); an equivariance test of that proves nothing."""
    torch.manual_seed(1)
    last = prox.convs[-1].weight if isinstance(prox, ScaleEquivariantProx) else prox.net.conv_out.conv.weights
    with torch.no_grad():
        last.normal_(0, 0.5)


# ---------------------------------------------------------------- bases


def test_dilated_kernel_at_scale_2_is_the_scale_1_kernel_with_taps_two_pixels_apart():
    torch.manual_seed(0)
    lift = LiftingConv(1, 1, scales=[1, 2], kernel_size=5, effective_size=3, basis="dilated")
    k1, k2 = lift._kernels(lift.weight)[:, 0, 0]  # (S, out, in, k, k) -> per scale (k, k)
    assert torch.equal(k2[::2, ::2], k1[1:4, 1:4])
    assert torch.count_nonzero(k2) == 9 and torch.count_nonzero(k1[1:4, 1:4]) == 9 and torch.count_nonzero(k1) == 9


def test_hermite_basis_matches_numpy_hermite_polynomials():
    k, eff, scales, sigma = 7, 3, [1.0, 1.5], 0.9
    basis = hermite_basis(k, eff, scales, sigma).numpy()
    x = np.arange(k) - k // 2
    expected = []
    for s in scales:
        t = x / s
        h = [np.exp(-t**2 / (2 * sigma**2)) * np.polynomial.hermite_e.hermeval(t / sigma, [0] * n + [1])
             for n in range(eff)]
        expected.append(np.stack([np.outer(h[n], h[m]) / s**2 for n in range(eff) for m in range(eff)]))
    expected = np.stack(expected, axis=1)
    expected /= np.linalg.norm(expected[:, :1].reshape(eff * eff, -1), axis=1)[:, None, None, None]
    np.testing.assert_allclose(basis, expected, rtol=1e-12, atol=1e-12)


def test_bases_keep_the_kernel_sum_across_scales():
    """A constant image meets the same response at every scale (up to Hermite's sampling)."""
    d = dilated_basis(9, 3, [1, 2, 4]).sum((2, 3))
    assert torch.equal(d, torch.ones_like(d))
    h = hermite_basis(15, 1, [1.0, 1.41, 2.0]).sum((2, 3))
    torch.testing.assert_close(h, h[:, :1].expand_as(h), rtol=1e-3, atol=0)


def test_parameter_count_does_not_depend_on_the_number_of_scales():
    two = ScaleEquivariantProx(2, 2, channels=4, scales=[1, 2], kernel_size=9)
    three = ScaleEquivariantProx(2, 2, channels=4, scales=[1, 2, 4], kernel_size=9)
    count = sum(p.numel() for p in two.parameters())
    assert count == sum(p.numel() for p in three.parameters())
    # lifting 4*2*9 + 4, scale conv 4*4*2*9 + 4, last 2*4*2*9 + 2 (9 basis functions, window 2)
    assert count == (72 + 4) + (288 + 4) + (144 + 2)


@pytest.mark.parametrize("kwargs,message", [
    (dict(scales=[1, 2, 2]), "scales must be strictly increasing, got \\[1, 2, 2\\]"),
    (dict(scales=[2, 1]), "scales must be strictly increasing"),
    (dict(scales=[0, 1]), "scales must be positive"),
    (dict(effective_size=7, kernel_size=5), "effective_size 7 is larger than kernel_size 5"),
    (dict(scales=[1, 2, 4], kernel_size=5), "effective_size 3 at scale 4 spans 9 pixels, larger than kernel_size 5"),
    (dict(scales=[1, 1.5]), "scales must be integers .* use basis: hermite"),
    (dict(kernel_size=4), "kernel_size must be odd"),
    (dict(scale_window=3), "scale_window must be an integer in \\[1, 2\\]"),
    (dict(basis="gabor"), "basis must be one of"),
    (dict(projection="median"), "projection must be one of"),
    (dict(num_blocks=1), "num_blocks must be an integer >= 2"),
    (dict(sigma=0.5), "sigma is the hermite basis's Gaussian width"),
])
def test_bad_scale_settings_are_refused_at_construction_by_name(kwargs, message):
    with pytest.raises(ValueError, match="scale_equivariant prox: .*" + message):
        ScaleEquivariantProx(2, 2, **kwargs)


def test_projection_over_scales_is_max_or_mean():
    h = torch.tensor([1.0, -3.0, 5.0]).reshape(1, 1, 3, 1, 1)
    assert project_scales(h, "max").item() == 5.0
    assert project_scales(h, "mean").item() == 1.0


# ---------------------------------------------------------------- scale equivariance


def test_dilated_lifting_and_scale_conv_are_exactly_equivariant_under_decimation():
    """Decimate-then-convolve equals convolve-with-the-dilated-kernel-then-decimate (DISCO): features of
    the half-size image at scale i are those of the image at scale 2i, decimated, to float32 round-off
    (here on the whole image: 'same' zero padding at even sizes loses nothing)."""
    torch.manual_seed(0)
    x = smooth_image()
    lift = LiftingConv(2, 4, scales=[1, 2, 4], kernel_size=9, effective_size=3, basis="dilated")
    conv = ScaleConv(4, 4, scales=[1, 2, 4], kernel_size=9, effective_size=3, basis="dilated", scale_window=2)
    assert scale_equivariance_error(lift, x, 2, border=0, scale_shift=1) < 1e-6
    # The window reaches one scale up, so the largest two scales of the half-size image lack a counterpart.
    net = lambda t: conv(torch.relu(lift(t)))  # noqa: E731
    assert scale_equivariance_error(net, x, 2, border=0, scale_shift=1, num_scales=1) < 1e-6


def test_hermite_lifting_is_only_approximately_equivariant():
    """The same measurement tells the bases apart: sampled Hermite kernels are not exact dilations."""
    torch.manual_seed(0)
    lift = LiftingConv(2, 4, scales=[1, 2], kernel_size=9, effective_size=3, basis="hermite")
    error = scale_equivariance_error(lift, smooth_image(size=64), 2, scale_shift=1)
    assert 1e-3 < error < 0.5


def test_scale_prox_features_are_exactly_equivariant_for_the_dilated_basis():
    prox = ScaleEquivariantProx(2, 2, channels=4, scales=[1, 2, 4], kernel_size=9, scale_window=1)
    randomise_last_layer(prox)
    errors = equivariance_errors([prox], smooth_image())
    assert errors["scale_feature_equivariance_error_x2"] < 1e-6
    # The output, a projection over finitely many scales, is not exact: the largest scale of the
    # half-size image has no counterpart. Reported, not hidden.
    assert 1e-3 < errors["scale_equivariance_error_x2"] < 1
    assert 0 < errors["scale_equivariance_error_x1.41"] < 1


def test_downscale_is_decimation_at_factor_2_and_resampling_otherwise():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(downscale(x, 2), x[..., ::2, ::2])
    assert downscale(torch.ones(1, 1, 32, 32), math.sqrt(2)).shape[-2:] == (22, 22)
    torch.testing.assert_close(downscale(torch.ones(1, 1, 32, 32), math.sqrt(2)), torch.ones(1, 1, 22, 22))


# ---------------------------------------------------------------- rotation equivariance


@pytest.mark.parametrize("group", ["c4", "d4"])
def test_rotation_prox_is_equivariant_to_float32_round_off(group):
    prox = RotationEquivariantProx(2, 2, group=group, channels=8, num_blocks=1)
    randomise_last_layer(prox)
    x = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(prox(x), x)
    assert rotation_equivariance_error(prox, x) < 1e-5
    if group == "c4":  # reflections are not in C4: the measurement sees it
        assert rotation_equivariance_error(prox, x, flips=True) > 1e-2


def test_real_and_imaginary_parts_are_scalar_fields():
    """A rotated complex image is the rotation of each part: the 2M input channels are trivial fields."""
    prox = RotationEquivariantProx(4, 2, group="d4", channels=8, num_blocks=0)
    assert [r.name for r in prox.net.conv_in.conv.in_type.representations] == ["irrep_0,0"] * 4


def test_export_is_plain_torch_with_identical_outputs():
    prox = RotationEquivariantProx(2, 2, group="d4", channels=16, num_blocks=1)
    randomise_last_layer(prox)
    plain = prox.export()
    assert {type(m).__name__ for m in plain.modules()} <= {"_ResidualCNN", "ModuleList", "Conv2d"}
    x = torch.randn(2, 2, 20, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), prox(x), atol=1e-5, rtol=0)


def test_rotation_prox_state_dict_is_the_same_in_train_and_eval_and_reloads_exactly():
    prox = RotationEquivariantProx(2, 2, group="c4", channels=8, num_blocks=1)
    randomise_last_layer(prox)
    keys = list(prox.state_dict())
    clone = RotationEquivariantProx(2, 2, group="c4", channels=8, num_blocks=1).eval()
    clone.load_state_dict(prox.state_dict())  # loaded in eval mode: no stale cached filter
    assert list(clone.state_dict()) == keys
    x = torch.randn(1, 2, 12, 12)
    assert torch.equal(clone(x), prox.eval()(x))


@pytest.mark.parametrize("kwargs,message", [
    (dict(group="d4", channels=12), "channels=12 cannot be realised by regular fields of d4 .* multiple of 8"),
    (dict(group="c4", channels=6), "channels=6 cannot be realised by regular fields of c4 .* multiple of 4"),
    (dict(group="c8"), "group must be one of \\['c4', 'd4'\\]"),
    (dict(kernel_size=4), "kernel_size must be odd"),
])
def test_bad_rotation_settings_are_refused_at_construction_by_name(kwargs, message):
    with pytest.raises(ValueError, match="rotation_equivariant prox: " + message):
        RotationEquivariantProx(2, 2, **kwargs)


def test_numpy_without_tostring_is_refused_with_a_clear_message(monkeypatch):
    fake = types.SimpleNamespace(ndarray=type("ndarray", (), {}), __version__="2.3.0")
    monkeypatch.setattr(rotation_equivariant, "np", fake)
    with pytest.raises(ValueError, match="ndarray.tostring, removed in numpy 2.3; installed numpy 2.3.0"):
        RotationEquivariantProx(2, 2, channels=8)


# ---------------------------------------------------------------- in the unrolled network


@pytest.mark.parametrize("prox", [SCALE, ROTATION], ids=["scale", "rotation"])
def test_equivariant_proxes_start_as_the_identity(prox):
    x = torch.randn(1, 2, 16, 16)
    assert torch.equal(build_prox(prox, 2, 2)(x), x)


@pytest.mark.parametrize("strategy", ["e2e", "checkpoint", "gleam"])
@pytest.mark.parametrize("prox", [SCALE, SCALE_HERMITE, ROTATION], ids=["scale", "scale-hermite", "rotation"])
def test_equivariant_proxes_train_under_every_strategy(prox, strategy):
    torch.manual_seed(0)
    net = UnrolledNet(2, prox, dc="pgd")
    before = [p.detach().clone() for p in net.parameters()]
    s = build_strategy(strategy, net)
    y, maps, mask, x = sense_problem(spatial=(32, 32))
    optimizers = default_optimizers(s, net, lr=1e-2)
    first = s.step(net, y, maps, mask, x, l1_magnitude, optimizers)["loss"]
    for _ in range(3):
        last = s.step(net, y, maps, mask, x, l1_magnitude, optimizers)["loss"]
    # Every parameter moved (the layers behind the zero-initialised last one from the second step on)
    # and the loss went down.
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert last < first


@pytest.mark.parametrize("prox", [SCALE, ROTATION], ids=["scale", "rotation"])
def test_equivariant_proxes_are_refused_under_invertible_by_name(prox):
    net = UnrolledNet(2, prox, dc="modl")
    with pytest.raises(ValueError, match=f"needs an invertible prox; prox '{prox['name']}' is not invertible; "
                                         "invertible kinds: resnet \\(lipschitz < 1"):
        build_strategy("invertible", net)


@pytest.mark.parametrize("prox", ["scale_equivariant", "rotation_equivariant"])
def test_3d_and_cine_configs_are_refused_at_config_time(prox):
    with pytest.raises(ConfigError, match=f"model.prox: prox '{prox}' supports conv_dims \\[2\\] .*not conv_dims=3"):
        load_config(None, ["data.kind=cine", f"model.prox={{name: {prox}}}"])
    with pytest.raises(ValueError, match="conv_dims=3"):
        (ScaleEquivariantProx if prox == "scale_equivariant" else RotationEquivariantProx)(2, 3)
    # ky-kz slices of 3D data are 2D images: accepted
    assert load_config(None, ["data.kind=knee3d", f"model.prox={{name: {prox}}}"]).model.prox["name"] == prox


def test_equivariance_errors_cover_only_equivariant_proxes():
    scale, rotation = build_prox(SCALE, 2, 2), build_prox(ROTATION, 2, 2)
    image = torch.randn(1, 1, 16, 16, dtype=torch.complex64)
    keys = set(equivariance_errors([scale, rotation, torch.nn.Conv2d(2, 2, 3)], image))
    assert keys == {"scale_equivariance_error_x2", "scale_equivariance_error_x1.41", "rotation_equivariance_error"}
    assert equivariance_errors([build_prox({"name": "resnet", "channels": 4}, 2, 2)], image) == {}


def test_evaluation_reports_the_equivariance_errors_of_an_equivariant_network(synthetic, tmp_path):
    import json

    from mrirecon.evaluation.runner import evaluate
    from mrirecon.models.build import build_network

    cfg = load_config(None, ["data.kind=knee2d", "model.num_unrolls=2",
                             "model.prox={name: scale_equivariant, channels: 4}"])
    net = build_network(cfg)
    randomise_last_layer(net.unrolls[0].prox)
    evaluate(cfg, synthetic("knee2d"), tmp_path / "out", module=net, num_figures=0, progress=False)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    found = {k: v for k, v in metrics.items() if "equivariance" in k}
    # scales [1, 2] with a window of 2: no scale of the features is comparable, so only the output errors
    assert set(found) == {"scale_equivariance_error_x2", "scale_equivariance_error_x1.41"}
    assert all(0 < v < 10 for v in found.values())
