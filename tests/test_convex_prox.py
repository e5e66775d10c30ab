"""The convex dual denoiser as a prox: weights file, registry, training under every strategy, the fit
command, interpretability output."""
from __future__ import annotations

import pytest
import torch

from mrirecon.config import ConfigError, load_config
from mrirecon.models import UnrolledNet, build_prox
from mrirecon.models.convex import ConvexDualProx, ConvexProblem, TwoLayerReLUConv, sample_gates
from mrirecon.models.convex.interpret import (effective_filters, plot_effective_filters, plot_regularisation_path,
                                              regularisation_path)
from mrirecon.models.convex.patches import patch_matrix, pixel_matrix
from mrirecon.models.convex.prox import save_weights
from mrirecon.training.strategies import build_strategy, default_optimizers
from problems import sense_problem


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    net = TwoLayerReLUConv(2, hidden=6, kernel_size=3)
    return save_weights(tmp_path / "prox.pt", net, "residual", {"objective": 1.0}), net


def batch(seed: int = 0, size: int = 12, coils: int = 3):
    return sense_problem(coils=coils, seed=seed, spatial=(size, size))


def test_prox_is_the_residual_network_with_frozen_weights(weights):
    path, net = weights
    prox = build_prox({"name": "convex_dual", "weights": str(path)}, in_channels=2, conv_dims=2)
    assert isinstance(prox, ConvexDualProx)
    assert not any(p.requires_grad for p in prox.parameters())
    x = torch.randn(2, 2, 8, 8)
    assert torch.allclose(prox(x), x + net(x), atol=1e-6)


def test_config_accepts_the_convex_prox_and_names_unknown_options(weights):
    path, _ = weights
    cfg = load_config(None, [f"model.prox={{name: convex_dual, weights: {path}, trainable: false}}"])
    assert cfg.model.prox["name"] == "convex_dual"
    with pytest.raises(ValueError, match="unknown option.*'lamda'"):
        build_prox({"name": "convex_dual", "weights": str(path), "lamda": 1}, 2, 2)
    with pytest.raises(ConfigError, match="model.prox.name"):
        load_config(None, ["model.prox={name: convex_duel}"])


def test_fixed_prox_needs_a_readable_weights_file(tmp_path, weights):
    with pytest.raises(ValueError, match="trainable: false needs weights"):
        build_prox({"name": "convex_dual"}, 2, 2)
    with pytest.raises(ValueError, match=r"weights file .*missing\.pt.* not found \(model\.prox\.weights\)"):
        build_prox({"name": "convex_dual", "weights": str(tmp_path / "missing.pt")}, 2, 2)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read weights file"):
        build_prox({"name": "convex_dual", "weights": str(tmp_path / "junk.pt")}, 2, 2)
    with pytest.raises(ValueError, match="fitted for 2 channels.*gives the prox 4"):
        build_prox({"name": "convex_dual", "weights": str(weights[0])}, 4, 2)
    with pytest.raises(ValueError, match="conv_dims=2"):
        build_prox({"name": "convex_dual", "weights": str(weights[0])}, 2, 3)


@pytest.mark.parametrize("strategy,options", [("e2e", {}), ("checkpoint", {}), ("gleam", {"num_modules": 2})])
def test_fixed_prox_trains_only_the_step_sizes_under_every_strategy(weights, strategy, options):
    path, _ = weights
    torch.manual_seed(0)
    net = UnrolledNet(2, {"name": "convex_dual", "weights": str(path)}, "pgd")
    strat = build_strategy(strategy, net, **options)
    groups = strat.param_groups(net)
    assert [len(g) for g in groups] == ([1, 1] if strategy == "gleam" else [2])  # one step size per unroll
    prox_before = [p.clone() for u in net.unrolls for p in u.prox.parameters()]
    steps_before = [float(u.step_size.detach()) for u in net.unrolls]
    y, maps, mask, x = batch()
    losses = strat.step(net, y, maps, mask, x, lambda a, b: (a - b).abs().mean(),
                        default_optimizers(strat, net, lr=1e-2))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert all(torch.equal(a, b) for a, b in zip(prox_before, (p for u in net.unrolls for p in u.prox.parameters())))
    assert all(float(u.step_size.detach()) != s for u, s in zip(net.unrolls, steps_before))


def test_invertible_strategy_rejects_the_convex_prox_by_name(weights):
    net = UnrolledNet(2, {"name": "convex_dual", "weights": str(weights[0])}, "modl")
    with pytest.raises(ValueError, match="invertible prox"):
        build_strategy("invertible", net)


def test_trainable_prox_is_fine_tuned_inside_the_unrolls(weights):
    path, _ = weights
    net = UnrolledNet(2, {"name": "convex_dual", "weights": str(path), "trainable": True}, "pgd")
    strat = build_strategy("e2e", net)
    before = net.unrolls[0].prox.net.conv1.weight.clone()
    y, maps, mask, x = batch()
    strat.step(net, y, maps, mask, x, lambda a, b: (a - b).abs().mean(), default_optimizers(strat, net, lr=1e-2))
    assert net.unrolls[0].prox.net.conv1.weight.requires_grad
    assert not torch.equal(before, net.unrolls[0].prox.net.conv1.weight)


def test_fit_command_writes_weights_the_prox_loads(synthetic, tmp_path, capsys):
    from mrirecon.cli import main

    root = synthetic("knee2d")
    config = tmp_path / "fit.yaml"
    config.write_text(f"data: {{kind: knee2d, root: {root}}}\n"
                      "fit: {num_patches: 150, num_gates: 6, lam: 1.0e-3, max_slices: 2,\n"
                      "      solver: {tol: 1.0e-5, tol_violation: 1.0e-6, max_outer: 10, inner_iter: 300}}\n")
    out = tmp_path / "convex.pt"
    assert main(["convex", "fit", "--config", str(config), "--out", str(out), "--no-progress", "fit.lam=2e-3"]) == 0
    prox = build_prox({"name": "convex_dual", "weights": str(out)}, 2, 2)
    info = prox.info
    assert info["settings"]["lam"] == 2e-3 and info["data"]["patches"] == 150
    # a short solve: nearly feasible (exactly, when the final repair was cheap enough to keep)
    assert info["violation"] <= 1e-3 and (info["violation"] == 0.0 or not info["repaired"])
    assert info["hidden"] == prox.net.hidden
    assert list(tmp_path.glob(".convex.pt.*")) == []  # no temporary file left behind
    capsys.readouterr()
    assert main(["convex", "fit", "--config", str(config), "--out", str(out), "fit.lamda=1"]) == 2
    assert "fit.lamda" in capsys.readouterr().err
    assert main(["convex", "fit", "--config", str(config), "--out", str(out), "fit.input=clean"]) == 2
    assert "fit.input" in capsys.readouterr().err


def tiny_problem(lam: float = 0.0):
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    noisy = clean + 0.3 * torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    X = patch_matrix(noisy, 3)
    return ConvexProblem(X, pixel_matrix(clean), sample_gates(X, 10), lam), noisy


def test_regularisation_path_is_empty_above_lam_max_and_active_below(tmp_path):
    problem, _ = tiny_problem()
    lam_max = problem.lam_max()  # U = 0 is optimal iff every group gradient <= lam
    rows = regularisation_path(problem, [0.5 * lam_max, 0.99 * lam_max, 1.01 * lam_max])
    assert [r["active_patterns"] for r in rows][1:] == [1, 0]
    assert rows[0]["active_patterns"] > 1
    out = plot_regularisation_path(rows, tmp_path / "path.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_effective_filters_reproduce_the_network_at_their_pixels(tmp_path):
    torch.manual_seed(1)
    net = TwoLayerReLUConv(2, hidden=5, kernel_size=3)
    image = torch.randn(2, 6, 7)
    pixels = [(0, 0), (3, 4), (5, 6)]
    filters = effective_filters(net, image, pixels)
    assert filters.shape == (3, 2, 2, 3, 3)
    out = net(image[None])[0]
    X = patch_matrix(image[None], 3)
    for (y, x), f in zip(pixels, filters):
        assert torch.allclose(f.reshape(2, -1) @ X[y * 7 + x], out[:, y, x], atol=1e-5)
    path = plot_effective_filters(image, filters, pixels, tmp_path / "filters.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"pixel \(6, 0\) is outside"):
        effective_filters(net, image, [(6, 0)])


def test_effective_filters_of_the_gated_network_reproduce_it_at_their_pixels():
    from mrirecon.models.convex.network import GatedReLUConv

    torch.manual_seed(2)
    net = GatedReLUConv(2, patterns=4, kernel_size=3)
    net.gates.normal_()
    image = torch.randn(2, 6, 7)
    pixels = [(0, 0), (3, 4)]
    filters = effective_filters(net, image, pixels)
    out = net(image[None])[0]
    X = patch_matrix(image[None], 3)
    for (y, x), f in zip(pixels, filters):
        assert torch.allclose(f.reshape(2, -1) @ X[y * 7 + x], out[:, y, x], atol=1e-5)


def test_a_gated_weights_file_gives_the_gated_network_with_fixed_gates(tmp_path):
    from mrirecon.models.convex.network import GatedReLUConv

    torch.manual_seed(3)
    net = GatedReLUConv(2, patterns=5, kernel_size=3)
    net.gates.normal_()
    path = save_weights(tmp_path / "gated.pt", net, "residual", {"objective": 1.0})
    prox = build_prox({"name": "convex_dual", "weights": str(path), "trainable": True}, in_channels=2, conv_dims=2)
    assert isinstance(prox.net, GatedReLUConv) and torch.equal(prox.net.gates, net.gates)
    assert [n for n, p in prox.named_parameters() if p.requires_grad] == ["net.filters.weight"]
    x = torch.randn(1, 2, 8, 8)
    assert torch.allclose(prox(x), x + net(x), atol=1e-6)
