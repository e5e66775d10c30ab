"""Convex dual denoisers: patches, patterns, solvers, the mapping to a ReLU network, bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrirecon.models.convex import (ConvexProblem, SolverDiverged, cone_decomposition, relu_to_network,
                                    sample_gates, solve_gated, solve_relu)
from mrirecon.models.convex.network import predict_images
from mrirecon.models.convex.patches import patch_matrix, pixel_matrix
from mrirecon.models.convex.problem import unique_pattern_gates


def denoising_problem(size: int = 4, k: int = 3, gates: int = 8, lam: float = 1e-2, group_by: str = "channel",
                      seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(1, 2, size, size, generator=g, dtype=torch.float64)
    noisy = clean + 0.3 * torch.randn(1, 2, size, size, generator=g, dtype=torch.float64)
    X, Y = patch_matrix(noisy, k), pixel_matrix(clean)
    return ConvexProblem(X, Y, sample_gates(X, gates, seed=seed), lam, group_by), noisy, clean


def test_patch_rows_are_what_a_same_padded_conv_sees():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 2, 5, 6, generator=g), torch.randn(3, 2, 3, 3, generator=g)
    rows = patch_matrix(x, 3) @ w.reshape(3, -1).T       # (2*5*6, 3)
    assert torch.allclose(rows, pixel_matrix(F.conv2d(x, w, padding=1)), atol=1e-5)


def test_gates_drop_duplicate_and_all_zero_patterns():
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    gates = torch.tensor([[1.0, 2.0, -1.0, -1.0], [1.0, 1.0, -1.0, 0.5]], dtype=torch.float64)  # (d, P)
    # patterns: g0 -> [1,1,0]; g1 -> [1,1,0] (duplicate); g2 -> [0,0,1]; g3 -> [0,1,1]
    kept = unique_pattern_gates(X, gates)
    assert torch.equal(kept, gates[:, [0, 2, 3]])
    X2 = torch.tensor([[1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    negative = torch.tensor([[-1.0], [-1.0]], dtype=torch.float64)   # pattern [0, 0] on X2: dropped
    assert torch.equal(unique_pattern_gates(X2, torch.cat([negative, -negative], 1)), -negative)


def test_gated_solver_reaches_optimality_and_matches_the_group_soft_threshold_fixed_point():
    problem, _, _ = denoising_problem()
    r = solve_gated(problem, tol=1e-7, gap_tol=0.0)
    assert r.converged and r.optimality <= 1e-7
    _, grad = problem.loss_and_grad(r.weights["U"])
    # an optimum is a fixed point of the proximal gradient map for any step
    again = problem.soft_threshold(r.weights["U"] - 0.1 * grad, 0.1)
    assert torch.allclose(again, r.weights["U"], atol=1e-6)
    assert 0 < (problem.group_norms(r.weights["U"]) > 0).sum() < problem.group_norms(r.weights["U"]).numel()


def test_cone_decomposition_is_exactly_feasible_and_predicts_like_the_gated_model():
    problem, _, _ = denoising_problem(group_by="pattern")
    U = solve_gated(problem, tol=1e-6).weights["U"]
    V, W = cone_decomposition(problem, U)
    assert problem.constraint_violation(V, W) == 0.0
    assert torch.allclose(problem.predict(V - W), problem.predict(U), atol=1e-12)


def test_relu_solution_maps_to_a_two_layer_network_with_the_same_outputs_and_objective():
    problem, noisy, clean = denoising_problem()
    r = solve_relu(problem, tol=1e-6, tol_violation=1e-8)
    V, W = r.weights["V"], r.weights["W"]
    assert r.violation <= 1e-8
    net = relu_to_network(V, W, kernel_size=3, dtype=torch.float64)
    assert torch.allclose(pixel_matrix(net(noisy)), problem.predict(V - W), atol=1e-5)
    # lam/2 (||u||^2 + a^2) per unit == lam ||v|| per column: the primal and convex objectives agree
    primal = float(net.regularised_objective(noisy, clean, problem.lam).detach())
    assert primal == pytest.approx(problem.relu_objective(V, W), rel=1e-6)
    # float32 module (what the prox uses): same outputs to 1e-5
    net32 = relu_to_network(V, W, kernel_size=3)
    assert net32.conv1.weight.dtype == torch.float32
    assert torch.allclose(pixel_matrix(net32(noisy.float())).double(), problem.predict(V - W), atol=1e-5)


def test_gated_model_predicts_new_images_with_its_gates():
    problem, noisy, _ = denoising_problem(group_by="pattern")
    U = solve_gated(problem, tol=1e-6).weights["U"]
    out = predict_images(U, problem.gates, noisy, 3)
    assert torch.allclose(pixel_matrix(out), problem.predict(U), atol=1e-12)


def test_paired_gates_put_every_linear_filter_in_the_gated_model():
    problem, _, _ = denoising_problem(size=6)
    gates = sample_gates(problem.X, 8, seed=3, paired=True)
    assert torch.equal(gates[:, 4:], -gates[:, :4])  # four random gates, then their negatives
    paired = ConvexProblem(problem.X, problem.Y, gates, 1e-3, "channel")
    assert torch.equal(paired.D[:, :4] + paired.D[:, 4:], torch.ones_like(paired.D[:, :4]))  # complementary
    # the least-squares linear filter W, as the weights of one gate pair: exactly the linear prediction
    W = torch.linalg.lstsq(problem.X, problem.Y).solution              # (d, c)
    U = torch.zeros(paired.shape, dtype=torch.float64)
    U[1], U[5] = W, W
    assert torch.allclose(paired.predict(U), problem.X @ W, atol=1e-12)
    # unpaired random gates do not hold it: the same weights on any two of them predict something else
    unpaired = ConvexProblem(problem.X, problem.Y, sample_gates(problem.X, 8, seed=3), 1e-3, "channel")
    U2 = torch.zeros(unpaired.shape, dtype=torch.float64)
    U2[1], U2[5] = W, W
    assert not torch.allclose(unpaired.predict(U2), problem.X @ W, atol=1e-3)


# ----------------------------------------------------------------------------------- bad input
def test_zero_gates_is_an_error_naming_P():
    problem, _, _ = denoising_problem()
    with pytest.raises(ValueError, match="num_gates"):
        sample_gates(problem.X, 0)
    with pytest.raises(ValueError, match=r"num_gates .* >= 2 with paired gates, got 1"):
        sample_gates(problem.X, 1, paired=True)


def test_negative_lam_is_an_error_naming_lam():
    problem, _, _ = denoising_problem()
    with pytest.raises(ValueError, match="lam"):
        ConvexProblem(problem.X, problem.Y, problem.gates, -1e-3)


def test_patch_larger_than_the_image_is_an_error_naming_kernel_size():
    with pytest.raises(ValueError, match=r"kernel_size=5 is larger than the image \(4, 4\)"):
        patch_matrix(torch.zeros(1, 2, 4, 4), 5)
    with pytest.raises(ValueError, match="odd"):
        patch_matrix(torch.zeros(1, 2, 4, 4), 2)


def test_divergent_fixed_step_stops_with_an_error_and_no_weights():
    problem, _, _ = denoising_problem()
    with pytest.raises(SolverDiverged, match=r"step=1e\+03.*reduce `step`"):
        solve_gated(problem, step=1e3, line_search=False, max_iter=500)


def test_line_search_recovers_from_the_same_step():
    problem, _, _ = denoising_problem()
    r = solve_gated(problem, step=1e3, tol=1e-6)
    assert r.converged and math.isfinite(r.objective)


def test_gram_form_of_the_gated_loss_equals_the_direct_one():
    problem, _, _ = denoising_problem(group_by="pattern")
    U = torch.randn(problem.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    problem.gram = False
    direct = problem.loss_and_grad(U)
    problem.gram = True
    gram = problem.loss_and_grad(U)
    assert float(gram[0]) == pytest.approx(float(direct[0]), rel=1e-12)
    assert torch.allclose(gram[1], direct[1], rtol=1e-10, atol=1e-12)


def test_gated_network_predicts_like_the_gated_model_and_drops_switched_off_patterns():
    from mrirecon.models.convex.network import gated_to_network

    problem, noisy, _ = denoising_problem(group_by="pattern", lam=0.05)
    U = solve_gated(problem, tol=1e-7).weights["U"]
    off = int((problem.group_norms(U) == 0).sum())
    assert off > 0
    net = gated_to_network(U, problem.gates, 3, dtype=torch.float64)
    assert net.hidden == problem.shape[0] - off
    assert torch.allclose(net(noisy), predict_images(U, problem.gates, noisy, 3), atol=1e-12)
    assert [name for name, _ in net.named_parameters()] == ["filters.weight"]   # the gates are not trained
