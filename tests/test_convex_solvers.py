"""Convex solvers at scale: the matrix-free path equals the Gram-matrix one, lam >= lam_max is answered at
once, and the stopping rule never certifies an infeasible point."""
from __future__ import annotations

import math
import time

import pytest
import torch

from mrirecon.models.convex import ConvexProblem, certified, sample_gates, solve_gated, solve_relu
from mrirecon.models.convex.patches import patch_matrix, pixel_matrix
from mrirecon.models.convex.cones import ConeProjector
from mrirecon.models.convex.solvers import AugmentedLagrangian


def denoising_problem(group_by: str = "channel", lam: float = 1e-2, size: int = 4, gates: int = 8, **kw):
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, 2, size, size, generator=g, dtype=torch.float64)
    noisy = clean + 0.3 * torch.randn(1, 2, size, size, generator=g, dtype=torch.float64)
    X, Y = patch_matrix(noisy, 3), pixel_matrix(clean)
    return ConvexProblem(X, Y, sample_gates(X, gates), lam, group_by, **kw)


@pytest.mark.parametrize("group_by", ["pattern", "channel"])
def test_matrix_free_loss_and_gradient_equal_the_gram_matrix_ones(group_by):
    gram = denoising_problem(group_by, gram=True)
    free = denoising_problem(group_by, gram=False, block=7)   # 16 rows in blocks of 7, 7, 2
    U = torch.randn(gram.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (fg, gg), (ff, gf) = gram.loss_and_grad(U), free.loss_and_grad(U)
    assert float(ff) == pytest.approx(float(fg), rel=1e-12)
    assert torch.allclose(gf, gg, rtol=1e-10, atol=1e-13)
    assert float(free.loss(U)) == pytest.approx(float(fg), rel=1e-12)


def test_matrix_free_solution_equals_the_gram_matrix_solution():
    a = solve_gated(denoising_problem(gram=True), tol=1e-7, gap_tol=0.0)
    b = solve_gated(denoising_problem(gram=False, block=7), tol=1e-7, gap_tol=0.0)
    assert a.converged and b.converged
    assert b.objective == pytest.approx(a.objective, rel=1e-9)
    # n = 16 rows < P d unknowns: the objective is flat along some directions, the weights agree to 1e-4
    assert torch.allclose(b.weights["U"], a.weights["U"], atol=1e-4)


def test_float32_patches_reach_the_float64_optimum_to_float32_accuracy():
    exact = solve_gated(denoising_problem(gram=False), tol=1e-7, gap_tol=0.0)
    p64 = denoising_problem(gram=False)
    p32 = ConvexProblem(p64.X.float(), p64.Y, p64.gates, p64.lam, p64.group_by, gram=False)
    r = solve_gated(p32, tol=0.0, gap_tol=1e-5)
    assert r.weights["U"].dtype == torch.float64 and p32.X.dtype == torch.float32  # float64 accumulation
    assert r.converged and 0 <= r.gap <= 1e-5
    assert p64.gated_objective(r.weights["U"]) == pytest.approx(exact.objective, rel=1e-5)


def test_the_gram_matrix_is_used_only_within_its_memory_budget():
    P, d, _ = denoising_problem().shape
    need = (P * d) ** 2 * 8                                   # float64 Gram matrix of side P d
    assert denoising_problem().gram_bytes == need
    assert denoising_problem(gram_budget=need).gram is True
    assert denoising_problem(gram_budget=need - 1).gram is False
    with pytest.raises(ValueError, match="gram_budget"):
        denoising_problem(gram_budget=-1)


def test_blocked_augmented_lagrangian_equals_the_one_block_one():
    one, blocked = denoising_problem(), denoising_problem(block=4)
    Z = torch.randn((2, *one.shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    als = [AugmentedLagrangian(p, delta=0.3) for p in (one, blocked)]
    for al in als:
        al.update(Z)                    # nonzero multipliers
    (fa, ga), (fb, gb) = (al.value_and_grad(0.5 * Z) for al in als)
    assert float(fb) == pytest.approx(float(fa), rel=1e-12)
    assert torch.allclose(gb, ga, rtol=1e-10, atol=1e-13)


def test_lam_max_is_the_closed_form_threshold_of_the_zero_optimum():
    problem = denoising_problem("pattern")
    lam_max = problem.lam_max()
    expected = max(float((problem.X.T @ (problem.D[:, [i]] * problem.Y)).norm()) for i in range(problem.shape[0]))
    assert lam_max == pytest.approx(expected / problem.n, rel=1e-12)
    _, grad = problem.loss_and_grad(problem.zeros())
    problem.lam = lam_max                     # 0 satisfies the optimality condition exactly ...
    assert float(problem.min_norm_subgradient(problem.zeros(), grad)) == 0.0
    problem.lam = 0.99 * lam_max              # ... and stops satisfying it just below
    assert float(problem.min_norm_subgradient(problem.zeros(), grad)) > 0.0


@pytest.mark.parametrize("solve", [solve_gated, solve_relu])
def test_lam_at_or_above_lam_max_returns_the_zero_optimum_without_iterating(solve):
    problem = denoising_problem()
    problem.lam = problem.lam_max()
    r = solve(problem)
    assert r.zero_optimum and r.converged and r.iterations == 0 and r.gap == 0.0
    assert all(float(w.abs().max()) == 0.0 for w in r.weights.values())
    assert r.objective == pytest.approx(float((problem.Y ** 2).sum()) / (2 * problem.n), rel=1e-14)
    problem.lam = 0.2 * r.lam_max   # (the ReLU program's own threshold can lie below lam_max: at 0.9 lam_max
    below = solve(problem, tol=1e-4)  # its optimum here is still 0, certified by a zero gap after 15 steps)
    assert not below.zero_optimum and below.iterations > 0 and below.objective < r.objective


def test_stopping_rule_refuses_a_point_whose_violation_is_above_tolerance():
    problem = denoising_problem()
    gated = solve_gated(problem, tol=1e-7, gap_tol=0.0)
    U = gated.weights["U"]
    # (V, W) = (U, 0) has the gated optimum's objective and a near-zero gap against the multiplier-free dual
    # (gamma = 0), yet it leaves the cones: the trap of a gap- or gradient-only stopping rule.
    violation = problem.constraint_violation(U, torch.zeros_like(U))
    assert violation > 1e-2 and gated.gap <= 1e-5
    assert not certified(violation, gap=gated.gap, optimality=gated.optimality, tol_violation=1e-6, gap_tol=1e-6,
                         tol=1e-6)
    assert certified(1e-6, gap=0.0, optimality=math.inf, tol_violation=1e-6, gap_tol=1e-6, tol=0.0)
    assert not certified(1.0001e-6, gap=-1.0, optimality=0.0, tol_violation=1e-6, gap_tol=1e-6, tol=1e-6)
    # the augmented Lagrangian, started there and stopped after one outer step, reports no success
    r = solve_relu(problem, V0=U, W0=torch.zeros_like(U), method="augmented_lagrangian", max_outer=1, inner_iter=5,
                   repair=False)
    assert r.violation > 1e-6 and not r.converged
    # nor does the projected method when its projections may not add a single constraint (no cut rounds):
    # its iterates leave the cones, the violation is measured and reported, the gap alone does not certify
    r = solve_relu(problem, V0=U, W0=torch.zeros_like(U), projection_rounds=0, max_iter=50, repair=False)
    assert r.violation > 1e-6 and not r.converged


def test_relu_result_reports_a_certified_gap_and_violation():
    problem = denoising_problem()
    r = solve_relu(problem, tol=0.0, gap_tol=1e-4, tol_violation=1e-6)
    assert r.converged and r.violation <= 1e-6 and r.gap <= 1e-4
    assert r.lower_bound <= r.objective
    last = r.history[-1]
    assert {"violation", "gap", "optimality", "lower_bound"} <= set(last)


def test_relu_optimum_zero_below_the_gated_lam_max_is_returned_at_once():
    problem = denoising_problem()
    problem.lam = 0.9 * problem.lam_max()   # below the gated threshold, above the ReLU program's own one here
    lower, upper = problem.relu_lam_max_bracket()
    assert lower <= upper < 0.9 * problem.lam_max()
    gated, relu = solve_gated(problem, tol=1e-6), solve_relu(problem)
    assert not gated.zero_optimum and float(gated.weights["U"].abs().max()) > 0
    assert relu.zero_optimum and relu.converged and relu.iterations == 0 and relu.violation == 0.0
    assert relu.lam_max == upper
    assert all(float(w.abs().max()) == 0.0 for w in relu.weights.values())


def test_relu_threshold_short_circuits_exactly_from_its_upper_end():
    problem = denoising_problem()
    lower, upper = problem.relu_lam_max_bracket()
    zero = float((problem.Y ** 2).sum()) / (2 * problem.n)
    problem.lam = upper
    at = solve_relu(problem)
    assert at.zero_optimum and at.converged and at.iterations == 0 and at.lam_max == upper
    problem.lam = 0.95 * lower            # just below: the optimum leaves 0, certified by the solver
    below = solve_relu(problem, tol=0.0, gap_tol=1e-6)
    assert not below.zero_optimum and below.iterations > 0 and below.converged
    assert below.objective < zero and below.violation <= 1e-6


def test_projected_relu_iterates_stay_in_the_cones():
    problem = denoising_problem()
    r = solve_relu(problem, tol=0.0, gap_tol=1e-5, tol_violation=1e-8)
    assert r.converged and r.gap <= 1e-5 and r.violation <= 1e-8
    # every checked iterate was feasible to the projection tolerance (tol_violation / 10), not only the last
    assert r.history and max(h["violation"] for h in r.history) <= 1e-9
    assert all(h["lower_bound"] <= r.objective for h in r.history)


def test_projected_and_augmented_lagrangian_reach_the_same_relu_optimum():
    problem = denoising_problem("pattern")
    a = solve_relu(problem, tol=0.0, gap_tol=1e-5, tol_violation=1e-7)
    b = solve_relu(problem, method="augmented_lagrangian", tol=0.0, gap_tol=1e-5, tol_violation=1e-7)
    assert a.converged and b.converged
    # both certified within 1e-5 of the same optimum: each lies below the other's objective + its gap
    assert a.lower_bound <= b.objective and b.lower_bound <= a.objective
    assert a.objective == pytest.approx(b.objective, rel=2e-5)
    with pytest.raises(ValueError, match="method"):
        solve_relu(problem, method="admm")


def test_line_search_keeps_its_step_when_the_loss_reaches_its_rounding_level():
    # 16 rows, lam = 1e-8: the ReLU solution interpolates the targets, the loss falls to ~1e-16 (the Gram form's
    # rounding level, eps x 0's loss) and a purely relative bound test failed on rounding noise alone: the step
    # collapsed to 6e-12 and the iterates froze. The absolute floor keeps it at the curvature's scale.
    problem = denoising_problem(lam=1e-8)
    r = solve_relu(problem, tol=0.0, gap_tol=1e-9, max_iter=150, check_every=10)
    assert r.iterations == 150 and min(h["step"] for h in r.history) >= 1e-2
    # and the iterates keep descending after the loss bottoms out (the frozen run repeated one value)
    late = [h["objective"] for h in r.history if h["iteration"] >= 60]
    assert all(b < a for a, b in zip(late, late[1:]))


def test_time_limit_is_kept_and_the_best_checked_feasible_iterate_is_returned():
    problem = denoising_problem(lam=1e-4, size=12, gates=16)      # 144 rows: needs far more than 0.5 s
    t0 = time.perf_counter()
    r = solve_relu(problem, tol=0.0, gap_tol=1e-9, time_limit=0.5, check_every=2)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5 + 1.0 and not r.converged and r.status == "time limit: best checked feasible iterate"
    zero = float((problem.Y ** 2).sum()) / (2 * problem.n)
    assert r.violation <= 1e-6 and r.objective < zero and r.history
    # the returned point is the best checked feasible one or a later, better one: never worse than the checks'
    assert r.objective <= min(h["objective"] for h in r.history if h["violation"] <= 1e-6) * (1 + 1e-6)
    # (possibly a line-search point, measured there: the reported numbers are the returned weights' own)
    assert problem.relu_objective(r.weights["V"], r.weights["W"]) == pytest.approx(r.objective, rel=1e-12)
    assert problem.constraint_violation(r.weights["V"], r.weights["W"]) <= 1e-6
    # out of time before any scheduled check (check_every 1000): the last accepted point is still judged, and
    # the result is a measured feasible point, never an unmeasured or cut-short one
    r = solve_relu(problem, tol=0.0, gap_tol=1e-9, time_limit=0.3, check_every=1000)
    assert not r.converged and r.status == "time limit: best checked feasible iterate" and r.violation <= 1e-6
    assert r.history and problem.constraint_violation(r.weights["V"], r.weights["W"]) <= 1e-6


def test_screened_cone_checks_give_the_projections_of_full_checks():
    problem = denoising_problem(size=8)                                  # 64 rows
    g = torch.Generator().manual_seed(4)
    Z = torch.randn((2, *problem.shape), generator=g, dtype=torch.float64)
    # 36 of 64 rows kept (more than d = 18: a projection's active rows have margin 0, so tau needs more)
    screened, full = ConeProjector(problem, tol=1e-12, screen=36), ConeProjector(problem, tol=1e-12, screen=64)
    for k in range(4):    # a converging sequence: small moves, within the screening radius after the first
        Zk = Z + 1e-4 * k * torch.randn(Z.shape, generator=g, dtype=torch.float64)
        a, b = screened.project(Zk), full.project(Zk)
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
        assert screened.last_violation <= 1e-12
    assert screened.screened_checks > 0 and problem.constraint_violation(a[0], a[1]) <= 1e-12


def test_screening_state_is_rebuilt_only_after_small_moves_and_projections_are_unchanged():
    problem = denoising_problem(size=8)                                  # 64 rows
    g = torch.Generator().manual_seed(5)
    Z = torch.randn((2, *problem.shape), generator=g, dtype=torch.float64)
    lazy = ConeProjector(problem, tol=1e-12, screen=36)                  # default: rebuild after moves < 2 tau
    eager = ConeProjector(problem, tol=1e-12, screen=36, rebuild=math.inf)   # rebuild at every full check
    full = ConeProjector(problem, tol=1e-12, screen=64)                  # every row kept: the exact reference
    jumps = [Z + torch.randn(Z.shape, generator=g, dtype=torch.float64) for _ in range(4)]    # far moves
    creep = [jumps[-1] + 1e-4 * k * torch.randn(Z.shape, generator=g, dtype=torch.float64) for k in range(1, 5)]
    for k, Zk in enumerate(jumps + creep):
        a, b, c = lazy.project(Zk), eager.project(Zk), full.project(Zk)
        assert torch.allclose(a, c, rtol=0, atol=1e-10) and torch.allclose(b, c, rtol=0, atol=1e-10)
        if k == len(jumps) - 1:
            # the far moves: the eager projector rebuilt every column's state after every jump; the lazy one
            # built each once and rebuilt after a jump only the few whose projection barely moved (e.g. stayed 0)
            assert eager.rebuilt == len(jumps) * eager.ncols
            assert lazy.rebuilt < 2 * lazy.ncols < eager.rebuilt
    # the small moves: the states are rebuilt near the new point and the next checks are screened
    assert lazy.rebuilt > lazy.ncols and lazy.screened_checks > 0


def test_a_warm_start_is_projected_not_shrunk_away():
    problem = denoising_problem()
    r = solve_relu(problem, tol=0.0, gap_tol=1e-5, tol_violation=1e-8, max_iter=2000)
    assert r.converged
    # one step from the certified point: the start is projected (it is feasible: unchanged), not also
    # soft-thresholded by the first step, so the one prox-gradient step can only descend from its objective
    again = solve_relu(problem, V0=r.weights["V"], W0=r.weights["W"], tol=0.0, gap_tol=0.0, tol_violation=1e-8,
                       max_iter=1, check_every=1, repair=False)
    assert again.iterations == 1 and again.violation <= 1e-8
    assert again.objective <= r.objective * (1 + 1e-12)
