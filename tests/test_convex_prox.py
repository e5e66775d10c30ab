"""The convex dual denoiser as a prox: weights file, registry, training under every strategy, the fit
command, interpretability output."""
from __future__ import annotations

import pytest
import torch

from mrirecon.config import ConfigError, load_config
from mrirecon.models import UnrolledNet, build_prox
from mrirecon.models.convex import ConvexDualProx, ConvexProblem, TwoLayerReLUConv, sample_gates, solve_relu
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


def fit_config(tmp_path, root, fit: str):
    """A fit config file over the dataset at `root` with the given `fit:` section (YAML flow text)."""
    config = tmp_path / "fit.yaml"
    config.write_text(f"data: {{kind: knee2d, root: {root}}}\nfit: {fit}\n")
    return config


def test_fit_command_writes_weights_the_prox_loads(synthetic, tmp_path, capsys):
    from mrirecon.cli import main

    config = fit_config(tmp_path, synthetic("knee2d"),
                        "{num_patches: 150, num_gates: 6, lam: 1.0e-3, max_slices: 2,\n"
                        "      solver: {tol: 1.0e-5, tol_violation: 1.0e-6, max_outer: 10, inner_iter: 300}}")
    out = tmp_path / "convex.pt"
    assert main(["convex", "fit", "--config", str(config), "--out", str(out), "--no-progress", "fit.lam=2e-3"]) == 0
    prox = build_prox({"name": "convex_dual", "weights": str(out)}, 2, 2)
    info = prox.info
    assert info["settings"]["lam"] == 2e-3 and info["data"]["patches"] == 150
    # a short solve: nearly feasible; when the final repair was cheap enough to keep, feasible up to the
    # rounding of the float32 patches (the repair's shift is exact in exact arithmetic only)
    assert info["violation"] <= 1e-3 and (info["violation"] <= 1e-7 or not info["repaired"])
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


def zero_prox_file(path):
    """A convex_dual weights file whose network outputs zero: with predicts residual the prox is the identity."""
    net = TwoLayerReLUConv(2, hidden=1, kernel_size=1)
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.conv2.weight.zero_()
    return save_weights(path, net, "residual", {})


def test_unroll_inputs_are_what_the_prox_of_an_unrolled_network_receives(tmp_path):
    from mrirecon.models.convex.fit import unroll_inputs
    from mrirecon.physics import SenseOp, complex_to_channels

    net = UnrolledNet(3, {"name": "convex_dual", "weights": str(zero_prox_file(tmp_path / "id.pt"))}, "pgd",
                      step_size_init=0.7)
    seen = []
    for u in net.unrolls:
        u.prox.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    y, maps, mask, _ = batch(seed=4)
    with torch.no_grad():
        net(y, maps, mask)
    expected = unroll_inputs(SenseOp(maps, mask, 2), y, 3, 0.7)
    assert len(seen) == 3
    for a, b in zip(seen, expected):
        assert torch.allclose(a, complex_to_channels(b), atol=1e-5)
    assert not torch.allclose(seen[0], seen[1], atol=1e-3)  # the iterates move (the test is not vacuous)


def test_held_out_gain_is_the_mse_ratio_in_decibels():
    from mrirecon.models.convex.fit import held_out_psnr_gain

    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)
    noisy = clean + 0.5 * torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)

    class HalfResidual(torch.nn.Module):  # removes exactly half of every input's error
        def forward(self, x):
            return 0.5 * (clean.float() - x)

    pairs = [(noisy, clean)]
    assert held_out_psnr_gain(HalfResidual(), "residual", pairs) == pytest.approx(10 * torch.log10(torch.tensor(4.0)).item(),
                                                                                 abs=1e-5)
    zero = TwoLayerReLUConv(2, hidden=1, kernel_size=1)
    torch.nn.init.zeros_(zero.conv2.weight)
    assert held_out_psnr_gain(zero, "residual", pairs) == 0.0
    assert held_out_psnr_gain(zero, "image", pairs) < 0  # predicting 0 for the image is worse than the input


def test_relu_lam_path_starts_each_lam_from_the_previous_solution(synthetic, tmp_path, monkeypatch):
    from mrirecon.cli import main
    from mrirecon.models.convex import fit as fit_module

    calls = []

    def recording(problem, **kw):
        result = solve_relu(problem, **kw)
        calls.append((kw.get("V0"), kw.get("W0"), result.weights["V"], result.weights["W"]))
        return result

    monkeypatch.setattr(fit_module, "solve_relu", recording)
    config = fit_config(tmp_path, synthetic("knee2d"),
                        "{input: unroll, unroll_steps: 2, kernel_size: 3, num_patches: 200, num_gates: 6,\n"
                        "      program: relu, lam_path: [0.5, 0.05], solver: {max_iter: 100}}")
    assert main(["convex", "fit", "--config", str(config), "--out", str(tmp_path / "c.pt"), "--no-progress"]) == 0
    (v0, w0, v1, w1), (v0b, w0b, _, _) = calls
    assert v0 is None and w0 is None                       # the first lam starts cold
    assert torch.equal(v0b, v1) and torch.equal(w0b, w1)   # the second from the first one's solution


def test_fit_on_a_lam_path_keeps_the_lam_that_denoises_the_val_split_best(synthetic, tmp_path):
    from mrirecon.cli import main

    config = fit_config(tmp_path, synthetic("knee2d"),
                        "{input: unroll, unroll_steps: 2, kernel_size: 3, num_patches: 300, num_gates: 8,\n"
                        "      program: gated, lam_path: [1.0, 0.1, 0.01], solver: {max_iter: 200}}")
    out = tmp_path / "convex.pt"
    assert main(["convex", "fit", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    info = build_prox({"name": "convex_dual", "weights": str(out)}, 2, 2).info
    path = info["path"]
    assert [q["lam_fraction"] for q in path] == pytest.approx([1.0, 0.1, 0.01])
    assert path[0]["val_psnr_gain_db"] == 0.0 and path[0]["objective"] == pytest.approx(info["zero_objective"])
    best = max(path, key=lambda q: q["val_psnr_gain_db"])
    assert info["lam"] == best["lam"] and info["val_psnr_gain_db"] == best["val_psnr_gain_db"]
    assert info["data"] == {"slices": info["data"]["slices"], "patches": 300, "split": "train", "input": "unroll"}


@pytest.mark.parametrize("override,key", [("fit.unroll_steps=0", "fit.unroll_steps"),
                                          ("fit.step_size=-1", "fit.step_size"),
                                          ("fit.lam_path=[0.5, 2]", "fit.lam_path"),
                                          ("fit.lam_path=[]", "fit.lam_path"),
                                          ("fit.paired_gates=2", "fit.paired_gates")])
def test_fit_settings_name_the_bad_key(tmp_path, override, key):
    from mrirecon.models.convex.fit import read_fit_config

    config = tmp_path / "fit.yaml"
    config.write_text("data: {kind: knee2d}\nfit: {input: unroll}\n")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        read_fit_config(config, [override])
