"""Certificates of the central claim on tiny problems: our solvers reach the convex optimum (checked against
cvxpy), and no weight-decayed two-layer ReLU network trained by Adam gets below it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mrirecon.models.convex import (ConvexProblem, TwoLayerReLUConv, relu_to_network, sample_gates, solve_gated,
                                    solve_relu)
from mrirecon.models.convex.cones import ConeProjector
from mrirecon.models.convex.patches import patch_matrix, pixel_matrix

try:
    import cvxpy as cp
except ImportError:  # pragma: no cover - cvxpy is a test-time dependency (requirements.txt)
    cp = None
needs_cvxpy = pytest.mark.skipif(cp is None, reason="cvxpy is not importable: `pip install cvxpy==1.9.3` "
                                 "(test-time dependency) to cross-check the convex optimum")


def denoising_problem(group_by: str, size: int = 4, k: int = 3, gates: int = 8, lam: float = 1e-2):
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, 2, size, size, generator=g, dtype=torch.float64)
    noisy = clean + 0.3 * torch.randn(1, 2, size, size, generator=g, dtype=torch.float64)
    X, Y = patch_matrix(noisy, k), pixel_matrix(clean)
    return ConvexProblem(X, Y, sample_gates(X, gates), lam, group_by), noisy, clean


def cvxpy_optimum(problem: ConvexProblem, relu: bool) -> float:
    """The same program written independently in cvxpy (one variable per pattern), solved by Clarabel."""
    P, d, c = problem.shape
    X, Y, D, S = (t.numpy() for t in (problem.X, problem.Y, problem.D, problem.S))

    def norms(M):
        return cp.norm(M, "fro") if problem.group_by == "pattern" else sum(cp.norm(M[:, j]) for j in range(c))

    V = [cp.Variable((d, c)) for _ in range(P)]
    W = [cp.Variable((d, c)) for _ in range(P)] if relu else [0] * P
    pred = sum(cp.multiply(D[:, [i]], X @ (V[i] - W[i])) for i in range(P))
    penalty = sum(norms(v) for v in V) + (sum(norms(w) for w in W) if relu else 0)
    cons = [cp.multiply(S[:, [i]], X @ M[i]) >= 0 for M in (V, W) for i in range(P)] if relu else []
    prob = cp.Problem(cp.Minimize(cp.sum_squares(pred - Y) / (2 * problem.n) + problem.lam * penalty), cons)
    prob.solve(solver="CLARABEL")
    assert prob.status == "optimal"
    return float(prob.value)


@needs_cvxpy
@pytest.mark.parametrize("group_by", ["pattern", "channel"])
def test_gated_optimum_matches_cvxpy(group_by):
    problem, _, _ = denoising_problem(group_by)
    ours = solve_gated(problem, tol=1e-7)
    assert ours.converged
    optimum = cvxpy_optimum(problem, relu=False)
    assert ours.objective == pytest.approx(optimum, rel=1e-4)
    # the reported duality gap is a true certificate: its lower bound lies below the independent optimum
    assert ours.lower_bound <= optimum * (1 + 1e-7) and ours.gap == pytest.approx(
        (ours.objective - ours.lower_bound) / ours.objective)


@needs_cvxpy
@pytest.mark.parametrize("group_by", ["pattern", "channel"])
def test_relu_optimum_matches_cvxpy_and_is_feasible(group_by):
    problem, _, _ = denoising_problem(group_by)
    ours = solve_relu(problem, tol=1e-6, tol_violation=1e-7)
    assert ours.converged and ours.violation <= 1e-7
    optimum = cvxpy_optimum(problem, relu=True)
    assert ours.objective == pytest.approx(optimum, rel=1e-4)
    assert ours.lower_bound <= optimum * (1 + 1e-7)     # the multipliers' dual bound is valid


def complete_arrangement(n_side: int = 3):
    """1 x 1 convolutions on a 3 x 3 two-channel image: 9 points in the plane, whose central line arrangement
    has exactly 2n = 18 sign patterns when no two are collinear with the origin and they do not lie in a
    half-plane. Enough random gates find all of them, so the convex program over the sampled patterns is
    the program over all patterns, and its optimum is the global optimum of every network below."""
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(1, 2, n_side, n_side, generator=g, dtype=torch.float64)
    noisy = clean + 0.5 * torch.randn(1, 2, n_side, n_side, generator=g, dtype=torch.float64)
    X, Y = patch_matrix(noisy, 1), pixel_matrix(clean)
    gates = sample_gates(X, 20000, seed=0)
    assert gates.shape[1] == 2 * X.shape[0], "not every pattern was sampled: the certificate would not hold"
    return X, Y, gates, noisy, clean


def train_network(noisy, clean, lam: float, seed: int, hidden: int = 16, steps: int = 1000) -> float:
    """Adam on 1/(2n) ||net(x) - y||^2 + lam/2 (||first layer||^2 + ||second layer||^2), hidden units split
    between the two output channels (unit j feeds channel j % 2 only: the networks group_by="channel" is
    exactly equivalent to). Returns the lowest regularised objective seen."""
    torch.manual_seed(seed)
    net = TwoLayerReLUConv(2, hidden, 1).double()
    mask = torch.zeros_like(net.conv2.weight)
    for j in range(hidden):
        mask[j % 2, j] = 1
    with torch.no_grad():
        net.conv2.weight.mul_(mask)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    best = float("inf")
    for _ in range(steps):
        opt.zero_grad()
        obj = net.regularised_objective(noisy, clean, lam)
        best = min(best, float(obj.detach()))
        obj.backward()
        net.conv2.weight.grad.mul_(mask)
        opt.step()
    return best


def test_adam_trained_relu_networks_never_beat_the_convex_optimum():
    X, Y, gates, noisy, clean = complete_arrangement()
    lam = 0.1
    problem = ConvexProblem(X, Y, gates, lam, group_by="channel")
    convex = solve_relu(problem, tol=1e-6, tol_violation=1e-6)
    assert convex.converged and convex.violation == 0.0  # exactly feasible after the final repair
    # the mapped network attains the convex objective (same scaling of the weight decay)
    net = relu_to_network(convex.weights["V"], convex.weights["W"], 1, dtype=torch.float64)
    mapped = float(net.regularised_objective(noisy, clean, lam).detach())
    assert mapped == pytest.approx(convex.objective, rel=1e-6)
    found = [train_network(noisy, clean, lam, seed) for seed in range(3)]
    # the solver's value is within ~1e-6 of the optimum (cvxpy agrees to 3e-7 on this problem)
    assert min(found) >= convex.objective * (1 - 1e-5)
    # and the bound is not vacuous: the best Adam run comes within 0.1% of it (2e-6 at the time of writing)
    assert min(found) <= convex.objective * (1 + 1e-3)


def cvxpy_cone_norm(problem: ConvexProblem, h, i: int) -> float:
    """max <h, u> over u in the cone K_i = {(2 D_i - I) X u >= 0}, ||u|| <= 1, written directly in cvxpy."""
    u = cp.Variable(problem.shape[1])
    cone = cp.multiply(problem.S[:, i].numpy(), problem.X.numpy() @ u) >= 0
    prob = cp.Problem(cp.Maximize(h @ u), [cone, cp.norm(u) <= 1])
    prob.solve(solver="CLARABEL")
    assert prob.status == "optimal"
    return float(prob.value)


@needs_cvxpy
@pytest.mark.parametrize("group_by", ["pattern", "channel"])
def test_relu_zero_threshold_matches_cvxpy_cone_by_cone(group_by):
    problem, _, _ = denoising_problem(group_by)
    lower, upper = problem.relu_lam_max_bracket()
    H = (problem.predict_adjoint(problem.Y) / problem.n).numpy()        # -gradient at 0, (P, d, c)
    P, _, c = problem.shape
    values = []
    for sign in (1.0, -1.0):                                             # directions V_i and W_i
        for i in range(P):
            cols = [cvxpy_cone_norm(problem, sign * H[i, :, ch], i) for ch in range(c)]
            values.append(max(cols) if group_by == "channel" else float(np.linalg.norm(cols)))
    assert lower <= upper <= lower * (1 + 1e-9)                           # certified and closed
    assert upper == pytest.approx(max(values), rel=1e-6)                # Clarabel's own accuracy
    assert upper < problem.lam_max()                                     # strictly below the gated threshold


@needs_cvxpy
def test_relu_optimum_is_zero_exactly_from_the_threshold_on():
    problem, _, _ = denoising_problem("channel")
    lower, upper = problem.relu_lam_max_bracket()
    zero = float((problem.Y ** 2).sum()) / (2 * problem.n)
    problem.lam = upper * (1 + 1e-6)
    assert cvxpy_optimum(problem, relu=True) == pytest.approx(zero, rel=1e-7)
    problem.lam = lower * 0.98
    assert cvxpy_optimum(problem, relu=True) < zero * (1 - 1e-6)


@needs_cvxpy
def test_cone_projection_matches_cvxpy():
    problem, _, _ = denoising_problem("channel")
    Z = torch.randn((2, *problem.shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    proj = ConeProjector(problem, tol=1e-12).project(Z)
    assert problem.constraint_violation(proj[0], proj[1]) <= 1e-12
    X, S = problem.X.numpy(), problem.S.numpy()
    for s, i, ch in [(0, 0, 0), (1, 3, 1), (0, 5, 1)]:
        u = cp.Variable(problem.shape[1])
        cp.Problem(cp.Minimize(cp.sum_squares(u - Z[s, i, :, ch].numpy())),
                   [cp.multiply(S[:, i], X @ u) >= 0]).solve(solver="CLARABEL")
        assert np.allclose(proj[s, i, :, ch].numpy(), u.value, atol=1e-6)


@needs_cvxpy
def test_cone_norm_upper_bounds_from_remembered_rows_are_valid_and_tight_on_their_own_active_set():
    problem, _, _ = denoising_problem("channel")
    Z = torch.randn((2, *problem.shape), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    G = torch.randn((2, *problem.shape), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    projector = ConeProjector(problem, tol=1e-12)
    proj = projector.project(Z)                         # remembers Z's active rows
    own = projector.norm_upper(Z)                       # (2, P, c): on Z's own active set: exact
    assert torch.allclose(own, proj.norm(dim=-2), rtol=1e-9, atol=1e-12)
    other = projector.norm_upper(G)                     # another vector, the same rows: a valid upper bound
    X, S = problem.X.numpy(), problem.S.numpy()
    for s, i, ch in [(0, 0, 0), (1, 3, 1), (0, 5, 1), (1, 7, 0)]:
        exact = cvxpy_cone_norm(problem, G[s, i, :, ch].numpy(), i)
        assert float(other[s, i, ch]) >= exact * (1 - 1e-6)
        assert float(other[s, i, ch]) <= float(G[s, i, :, ch].norm()) * (1 + 1e-12)   # never above mu = 0's


@needs_cvxpy
def test_relu_lower_bounds_from_the_prox_multipliers_never_exceed_cvxpy_optimum():
    problem, _, _ = denoising_problem("channel", size=5, gates=6, lam=3e-3)
    ours = solve_relu(problem, tol=0.0, gap_tol=1e-5, tol_violation=1e-8, check_every=2, max_iter=2000)
    optimum = cvxpy_optimum(problem, relu=True)
    # every checked iterate's dual bound, early (loose) or late (tight), is a lower bound on the optimum
    assert all(h["lower_bound"] <= optimum * (1 + 1e-7) for h in ours.history)
    assert ours.converged and ours.objective == pytest.approx(optimum, rel=1e-5)
    assert ours.history[-1]["dual_norm_max"] == pytest.approx(problem.lam, rel=1e-3)   # tight at the optimum


@needs_cvxpy
def test_float32_gated_solve_polished_in_float64_is_certified_against_cvxpy():
    p64, _, _ = denoising_problem("channel", size=6)
    p32 = ConvexProblem(p64.X.float(), p64.Y, p64.gates, p64.lam, p64.group_by, gram=False)
    alone = solve_gated(p32, tol=0.0, gap_tol=1e-5, max_iter=3000, polish=False)
    polished = solve_gated(p32, tol=0.0, gap_tol=1e-5, max_iter=3000)
    optimum = cvxpy_optimum(p64, relu=False)
    assert not alone.converged and alone.gap > 1e-4            # float32 rounding stalls the gap
    assert polished.converged and polished.gap <= 1e-5
    assert polished.history[-1]["phase"] == "float64 polish" and polished.history[0]["phase"] == "float32"
    assert polished.lower_bound <= optimum * (1 + 1e-7) and polished.objective == pytest.approx(optimum, rel=1e-5)
