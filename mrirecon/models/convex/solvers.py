"""Solvers for the convex programs of `problem.py`.

gated ReLU   R-FISTA (Mishkin, Sahiner and Pilanci, ICML 2022): accelerated proximal gradient with a
             backtracking line search (step x0.8 until the quadratic upper bound holds), step growth
             (x1.25 after a step accepted at once, i.e. when the bound had slack), gradient-mapping restarts
             (O'Donoghue and Candes: restart the momentum when <y_k - x_{k+1}, x_{k+1} - x_k> > 0) and the
             group soft-threshold prox.
ReLU         `solve_relu` (default method "projected"): R-FISTA whose prox is exact -- the projection of every
             column onto its cone (`cones.ConeProjector`) followed by the group soft-threshold -- so every
             iterate is feasible to the projection tolerance (see `solve_relu`). method "augmented_lagrangian":
             augmented Lagrangian for the cone constraints C(V) = (2 D_i - I) X V_i >= 0: inner R-FISTA on
             the loss + (1 / 2 delta) ||(gamma - delta C)_+||^2 (+ the same for W), multipliers
             gamma <- (gamma - delta C)_+, penalty delta doubled when the violation did not fall by 4x
             after an accurate inner solve (Bertsekas, "Constrained optimization and Lagrange multiplier
             methods", ch. 2: raise the penalty only when the multiplier step stalls). Starts from 0, from a
             given point, or from the cone decomposition of the gated solution (`start`).

Certificates. Every check computes a lower bound on the optimum (the Fenchel dual of `problem.dual_value` at
the current residual and, for ReLU, the current multipliers: the augmented Lagrangian's, or for the projected
method the cone norms bounded through the multipliers of the prox's own projections) and reports the relative
duality gap (objective - best lower bound) / objective beside the min-norm subgradient (of the Lagrangian for
ReLU) and the max constraint violation. A ReLU solve is `converged` only when the violation is <=
tol_violation AND (the gap is <= gap_tol OR the min-norm subgradient is <= tol): `certified` is that one rule.
A small gap alone proves nothing for ReLU: the gated optimum, read as (V, W) = (U, 0), has a zero gap against
the multiplier-free dual and violates the cones (tests/test_convex.py).
When lam >= lam_max (`problem.lam_max`, closed form) the gated optimum is 0: returned at once. The ReLU
program's own threshold is lower (`problem.relu_lam_max`, certified by cone projections, `cones.py`): at or
above it `solve_relu` returns 0 at once (the augmented Lagrangian also stops at 0 when its dual bound
certifies it).
Both stop with SolverDiverged -- never NaN weights -- when the objective is not finite or explodes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .cones import ConeProjector, column_gates, columns, gate_shift_columns, group_values, uncolumns
from .problem import ConvexProblem


class SolverDiverged(RuntimeError):
    """The objective became non-finite or exploded; the message names the setting to change."""


@dataclass
class SolverResult:
    weights: dict[str, Tensor]        # {"U"} (gated) or {"V", "W"} (ReLU), each (P, d, c)
    objective: float                  # of the convex program itself (no augmented-Lagrangian terms)
    optimality: float                 # min-norm subgradient norm (of the Lagrangian for ReLU)
    violation: float                  # max cone-constraint violation (0 for the gated program)
    converged: bool                   # `certified`: violation and (gap or optimality) within tolerance
    iterations: int
    step: float                       # the last accepted step size
    history: list[dict] = field(default_factory=list)  # per check: iteration, objective, optimality, ...
    repaired: bool = False            # ReLU: made exactly feasible by repair_feasibility
    gap: float = math.inf             # relative duality gap (objective - lower bound) / objective
    lower_bound: float = -math.inf    # the best dual value found: optimum >= lower_bound
    lam_max: float = math.nan         # lam at and above which the optimum is 0
    zero_optimum: bool = False        # the optimum is 0: lam >= lam_max (no iterations) or certified by the gap
    status: str = ""                  # "certified", "time limit: ...", "iteration limit", "zero optimum", ...


def certified(violation: float, gap: float, optimality: float, tol_violation: float, gap_tol: float,
              tol: float) -> bool:
    """The stopping rule of both solvers: feasible to tol_violation AND optimal by the relative duality gap
    or the min-norm subgradient. Never true for a point whose violation is above tol_violation."""
    return violation <= tol_violation and (gap <= gap_tol or optimality <= tol)


def relative_gap(objective: float, lower_bound: float) -> float:
    """(objective - lower bound) / |objective|: >= 0 at a feasible point; negative values mean the point is
    infeasible enough to fall below the optimum (kept signed, never clipped to a false 0)."""
    return (objective - lower_bound) / max(abs(objective), 1e-300)


def _check_finite(value: float, start: float, what: str, it: int, step: float, hint: str) -> None:
    # "Explodes": far above the starting objective, which a descent method with a valid step never is.
    if not math.isfinite(value) or value > 1e8 * max(abs(start), 1e-12):
        raise SolverDiverged(f"{what}: objective {value!r} at iteration {it} (start {start:.4g}) with step={step:.3g}: "
                             f"diverged; {hint}")


def fista(smooth: Callable[[Tensor], tuple[Tensor, Tensor]], value: Callable[[Tensor], Tensor],
          prox: Callable[[Tensor, float], Tensor], penalty: Callable[[Tensor], Tensor],
          check: Callable[[Tensor, float, Tensor], tuple[bool, dict]], x0: Tensor, step: float = 10.0,
          max_iter: int = 10_000, line_search: bool = True, check_every: int = 1, slack: float = 1e-12,
          floor: float = 0.0, deadline: float = math.inf, progress: bool = False,
          what: str = "fista") -> tuple[Tensor, dict]:
    """R-FISTA for min f(x) + h(x): `smooth` gives (f, grad f), `value` f alone, `prox(z, t)` = prox_{t h}(z).
    Every `check_every` iterations `check(x, f(x), grad f(x))` returns (stop, record); the record (with
    "optimality") goes to the history. The line search's bound test allows slack |bound| + floor: `slack`
    the relative rounding level of f, `floor` its absolute one (f = ||r||^2 / 2n computed from
    r = prediction - Y rounds at ~eps ||Y||^2 / 2n however small f gets; without the floor a point that
    interpolates the targets fails the test on rounding noise alone and the step collapses). Stops unconverged at
    `deadline` (time.perf_counter()), also inside the line search (the last accepted x is returned).
    Returns (x, info)."""
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"{what}: step must be a finite number > 0, got {step!r}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"{what}: max_iter must be an integer >= 1, got {max_iter!r}")
    hint = ("the line search could not find a step; check the data scale" if line_search
            else "reduce `step` or enable the line search (line_search: true)")
    t0 = time.perf_counter()
    x = x0.clone()
    f_x = float(value(x))
    start = f_x + float(penalty(x))
    _check_finite(start, start, what, 0, step, "the starting point is not finite")
    y, t = x.clone(), 1.0
    info = {"converged": False, "iterations": 0, "optimality": math.inf, "objective": start, "history": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=what, leave=False)
    try:
        for it in range(1, max_iter + 1):
            f_y, g_y = smooth(y)
            first_try, timed_out = True, False
            while True:
                x_new = prox(y - step * g_y, step)
                f_new = float(value(x_new))
                diff = x_new - y
                bound = float(f_y + (g_y * diff).sum() + (diff * diff).sum() / (2 * step))
                if not line_search or (math.isfinite(f_new) and f_new <= bound + slack * abs(bound) + floor):
                    break
                step *= 0.8
                first_try = False
                if time.perf_counter() > deadline:
                    timed_out = True   # no accepted point in this iteration: keep the last one
                    break
                if step < 1e-30:
                    raise SolverDiverged(f"{what}: line search shrank the step below 1e-30 at iteration {it}; "
                                         "the data or the objective is not finite/scaled")
            if timed_out:   # judge the last accepted point (a check is how a caller learns its quality)
                if info["history"] and info["history"][-1]["iteration"] == it - 1:
                    break
                f_x, g_x = smooth(x)
                stop, record = check(x, float(f_x), g_x)
                info["optimality"], info["converged"] = record["optimality"], stop
                info["history"].append({"iteration": it - 1, "objective": float(f_x) + float(penalty(x)),
                                        "step": step, "seconds": time.perf_counter() - t0, **record})
                break
            objective = f_new + float(penalty(x_new))
            _check_finite(objective, start, what, it, step, hint)
            if line_search and first_try:
                step *= 1.25  # the quadratic bound had slack: try a longer step next time
            if float(((y - x_new) * (x_new - x)).sum()) > 0:  # gradient-mapping restart
                t_new, y = 1.0, x_new
            else:
                t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
                y = x_new + ((t - 1) / t_new) * (x_new - x)
            x, t = x_new, t_new
            info.update(iterations=it, objective=objective, step=step)
            late = time.perf_counter() > deadline
            if it % check_every == 0 or it == max_iter or late:
                f_x, g_x = smooth(x)
                stop, record = check(x, float(f_x), g_x)
                info["optimality"] = record["optimality"]
                info["history"].append({"iteration": it, "objective": objective, "step": step,
                                        "seconds": time.perf_counter() - t0, **record})
                if bar is not None:
                    bar.set_postfix(objective=f"{objective:.6g}", optimality=f"{record['optimality']:.2e}")
                if stop:
                    info["converged"] = True
                    break
            if late:
                break
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    info["step"] = step
    return x, info


def _rounding(problem: ConvexProblem) -> dict:
    """fista's line-search tolerances. Relative slack: f is summed in float64, but float32 patch products
    round at ~1e-7, and the bound test must allow that. Absolute floor 64 eps64 ||Y||^2 / 2n: the Gram form
    u^T H u / 2 - b^T u + ||Y||^2 / 2n rounds at eps64 times 0's loss however small f gets (a 16-row problem
    at lam = 1e-8 interpolates its targets, f ~ 1e-16, and without the floor its step collapsed to 1e-11)."""
    slack = 1e-12 if problem.X.dtype == torch.float64 else 50 * torch.finfo(problem.X.dtype).eps
    return {"slack": slack, "floor": 64 * torch.finfo(torch.float64).eps * float((problem.Y * problem.Y).sum())
            / (2 * problem.n)}


def _zero_result(problem: ConvexProblem, names: tuple[str, ...], lam_max: float) -> SolverResult:
    objective = float((problem.Y * problem.Y).sum() / (2 * problem.n))
    return SolverResult({k: problem.zeros() for k in names}, objective, 0.0, 0.0, True, 0, math.nan,
                        [], False, 0.0, objective, lam_max, True, status="zero optimum (lam >= lam_max)")


def solve_gated(problem: ConvexProblem, U0: Tensor | None = None, step: float = 10.0, tol: float = 1e-6,
                gap_tol: float = 0.0, max_iter: int = 10_000, line_search: bool = True,
                check_every: int | None = None, time_limit: float = math.inf, progress: bool = False,
                polish: bool = True, patience: int = 5) -> SolverResult:
    """The gated-ReLU group lasso by R-FISTA. Converged when the min-norm subgradient is <= tol or the
    relative duality gap is <= gap_tol. check_every: default 1 with the Gram matrix, 10 without (a check
    costs a full pass over the patches).

    polish (float32 patches only): float32 products round the loss and gradient at ~1e-7 relative, which
    stalls the gap near 1e-4 on large problems; when the best gap has not halved over `patience` checks, the
    solve continues from its point on float64 copies of the patches (the same sign patterns D), and only
    float64 dual bounds certify the result (`lower_bound`; the history's "phase" says which)."""
    lam_max = problem.lam_max()
    if problem.lam >= lam_max:
        return _zero_result(problem, ("U",), lam_max)
    if check_every is None:
        check_every = 1 if problem.gram else 10
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    polish = polish and problem.X.dtype != torch.float64 and not problem.gram
    U = problem.zeros() if U0 is None else U0.to(problem.zeros())
    history, iterations, converged = [], 0, False
    best = {"lower": -math.inf}
    phase = "float32" if polish else str(problem.X.dtype).removeprefix("torch.")
    current = problem
    while True:
        b = current.predict_adjoint(current.Y) / current.n       # X^T D_i Y / n: <r, Y> = n <U, b> - ||Y||^2
        yy = float((current.Y * current.Y).sum())
        gaps: list[float] = []
        switch = {"now": False}

        def check(U: Tensor, f: float, grad: Tensor, current=current, b=b, yy=yy, gaps=gaps,
                  switch=switch) -> tuple[bool, dict]:
            opt = float(current.min_norm_subgradient(U, grad))
            # the loss gradient is X^T D_i r / n: its largest group norm is the dual constraint at z = r / n
            lower = current.dual_value(2 * current.n * f, current.n * float((U * b).sum()) - yy,
                                       float(current.group_norms(grad).max()))
            best["lower"] = max(best["lower"], lower)
            gap = relative_gap(f + float(current.penalty(U)), best["lower"])
            gaps.append(gap)
            stop = certified(0.0, gap, opt, 0.0, gap_tol, tol)
            if not stop and polish and phase == "float32" and len(gaps) > patience and \
                    min(gaps[-patience:]) > 0.5 * min(gaps[:-patience]):
                switch["now"] = True          # stalled at float32 rounding: polish in float64
            return stop or switch["now"], {"optimality": opt, "gap": gap, "phase": phase}

        phase_start = time.perf_counter()
        U, info = fista(current.loss_and_grad, current.loss, current.soft_threshold, current.penalty, check, U,
                        step=step, max_iter=max_iter - iterations, line_search=line_search,
                        check_every=check_every, **_rounding(current), deadline=deadline, progress=progress,
                        what="gated convex solve" + (" (float64 polish)" if phase == "float64 polish" else ""))
        offset = phase_start - t0                          # history seconds count from the solve's start
        history += [{**h, "iteration": h["iteration"] + iterations, "seconds": h["seconds"] + offset}
                    for h in info["history"]]
        iterations += info["iterations"]
        step = info["step"]
        converged = info["converged"] and not switch["now"]
        if not switch["now"] or iterations >= max_iter or time.perf_counter() > deadline:
            break
        current = ConvexProblem(problem.X.to(torch.float64), problem.Y, problem.gates.to(torch.float64),
                                problem.lam, problem.group_by, gram=False, block=problem.block)
        current.D = problem.D.to(torch.float64)        # the same patterns, not re-rounded ones
        phase, best["lower"] = "float64 polish", -math.inf   # float32 bounds are not float64-rigorous
    objective = current.gated_objective(U)
    status = "certified" if converged else (
        "time limit" if time.perf_counter() > deadline else "iteration limit")
    return SolverResult({"U": U}, objective, info["optimality"], 0.0, converged, iterations, step, history,
                        gap=relative_gap(objective, best["lower"]), lower_bound=best["lower"], lam_max=lam_max,
                        status=status)


def _gate_shift(problem: ConvexProblem, V: Tensor) -> Tensor:
    """(P, c): the smallest t >= 0 with (2 D_i - I) X (V_i[:, c] + t g_i) >= 0 on every row. The gate g_i lies
    inside its own cone ((2 D_i - I) X g_i = |X g_i|), so adding t g_i to a column moves it into the cone."""
    return uncolumns(gate_shift_columns(problem, columns(V), column_gates(V.shape).to(V.device))[:, None],
                     (*V.shape[:-2], 1, V.shape[-1])).squeeze(-2)


def cone_decomposition(problem: ConvexProblem, U: Tensor) -> tuple[Tensor, Tensor]:
    """(V, W) with V - W = U and both exactly in the cones (2 D_i - I) X (.)_i >= 0.

    W_i[:, c] = t g_i and V_i[:, c] = U_i[:, c] + t g_i with the smallest t making V feasible (W is, as
    the gate lies in its cone). The gated and ReLU models then predict the same on the training patches;
    the norms are not minimal (a feasible point, not the ReLU program's answer).
    """
    W = problem.gates.T.to(problem.dtype).unsqueeze(-1) * _gate_shift(problem, U).unsqueeze(1)
    return U + W, W


def repair_feasibility(problem: ConvexProblem, V: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Make a nearly feasible (V, W) feasible without changing V - W (so the predictions stay; exactly in exact
    arithmetic, up to the patches' rounding in floating point: ~1e-9 with float32 patches):
    add t g_i to both V_i[:, c] and W_i[:, c], t the smallest shift that fixes both. The objective grows
    by at most 2 lam t ||g_i|| per column, i.e. in proportion to the violation that was left."""
    t = torch.maximum(_gate_shift(problem, V), _gate_shift(problem, W))
    shift = problem.gates.T.to(problem.dtype).unsqueeze(-1) * t.unsqueeze(1)  # (P, d, c)
    return V + shift, W + shift


class AugmentedLagrangian:
    """The ReLU program's augmented Lagrangian over Z = stack(V, W) (2, P, d, c), by row blocks.

    Multipliers gamma (n, 2, P, c) in X's dtype (the one array of the solve that grows with n P)."""

    def __init__(self, problem: ConvexProblem, delta: float):
        self.p, self.delta = problem, delta
        P, d, c = problem.shape
        self.gamma = torch.zeros((problem.n, 2, P, c), dtype=problem.X.dtype, device=problem.X.device)
        self.sign = torch.tensor([1.0, -1.0], dtype=problem.X.dtype, device=problem.X.device).view(1, 2, 1, 1)

    def _rows(self, Z: Tensor, r: slice) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        p = self.p
        XZ = p.lift(Z, r)                                                  # (m, 2, P, c)
        D = p.D[r][:, None, :, None]                                       # (m, 1, P, 1)
        res = (D[:, 0] * (XZ[:, 0] - XZ[:, 1])).sum(1).to(p.dtype) - p.Y[r]  # (m, c) float64
        return XZ, D, 2 * D - 1, res

    def value_and_grad(self, Z: Tensor, grad: bool = True) -> tuple[Tensor, Tensor | None]:
        p, delta = self.p, self.delta
        loss, aug = 0.0, 0.0
        G = torch.zeros_like(Z) if grad else None
        for r in p.blocks():
            XZ, D, S, res = self._rows(Z, r)
            gamma = self.gamma[r]
            h = (gamma - delta * S * XZ).clamp_min(0)
            loss += float((res * res).sum())
            aug += float((h * h - gamma * gamma).sum(dtype=torch.float64))
            if grad:
                back = self.sign * (D * (res / p.n).to(p.X.dtype)[:, None, None, :]) - S * h
                G += p.lower(back, r)
        return Z.new_tensor(loss / (2 * p.n) + aug / (2 * delta)), G

    def update(self, Z: Tensor) -> dict:
        """Multiplier step gamma <- (gamma - delta C)_+, and, at Z with the new multipliers, what the
        certificates need: violation, ||r||^2, <r, Y> and the Lagrangian gradient X^T (+-D_i r / n - S_i gamma_i)."""
        p, delta = self.p, self.delta
        violation, rr, ry = 0.0, 0.0, 0.0
        G = torch.zeros_like(Z)
        for r in p.blocks():
            XZ, D, S, res = self._rows(Z, r)
            C = S * XZ
            violation = max(violation, float((-C).clamp_min(0).max()))
            self.gamma[r] = (self.gamma[r] - delta * C).clamp_min(0)
            rr += float((res * res).sum())
            ry += float((res * p.Y[r]).sum())
            back = self.sign * (D * (res / p.n).to(p.X.dtype)[:, None, None, :]) - S * self.gamma[r]
            G += p.lower(back, r)
        return {"violation": violation, "residual_sq": rr, "residual_dot_y": ry, "lagrangian_grad": G}


def _solve_relu_al(problem: ConvexProblem, V0: Tensor | None, W0: Tensor | None, delta: float | None, tol: float,
                   tol_violation: float, gap_tol: float, max_outer: int, inner_iter: int, step: float, rtol: float,
                   start: str, repair: bool, repair_rtol: float, repair_every: int, time_limit: float,
                   progress: bool, lam_max: float) -> SolverResult:
    """The exact ReLU program by an augmented Lagrangian (method "augmented_lagrangian").

    start: "zero", or "gated" (the cone decomposition of the gated solution: feasible, the gated model's
    predictions, larger norms); V0, W0 override it. Converged by `certified` (violation <= tol_violation
    and relative gap <= gap_tol or Lagrangian min-norm subgradient <= tol). Inner solves stop after
    inner_iter iterations or at max(tol, min(violation, 1e-2)): no need to solve accurately while far from
    feasible. rtol: also stop (unconverged unless certified) when feasible and the objective changed by
    <= rtol (relative) over an outer iteration.
    repair: finally make the solution exactly feasible by `repair_feasibility` (same predictions), kept only
    if that raises the objective by <= repair_rtol (relative): the shift is large when a patch lies close to
    a gate's hyperplane. Every `repair_every` outer steps the repaired point is also tried as a certificate
    (exactly feasible, objective within gap_tol of the dual bound): the solve stops there when it is one.
    The reported objective, violation and gap are those of the returned weights.
    time_limit (s): stop unconverged when exceeded.
    """
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    if delta is None:
        # pyscnn uses 1000 / n; 10 / n with accurate inner solves is the robust default (it certifies the tiny,
        # underdetermined test problems). On the benchmark's problems (n >= 400, d = 50) a stiff penalty with
        # short inner solves (delta=1000/n, inner_iter=10) reached the same certificate 2-4x sooner
        # (benchmarks/convex_solvers.py uses it), but left a 10% gap on those tiny problems after 5000 steps.
        delta = 10.0 / problem.n
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"relu convex solve: delta (the augmented-Lagrangian penalty) must be > 0, got {delta!r}")
    if V0 is None or W0 is None:
        V0, W0 = _relu_start(problem, start, step, tol, gap_tol, inner_iter, time_limit)
    Z = torch.stack([V0.to(problem.zeros()), W0.to(problem.zeros())])    # (2, P, d, c)
    al = AugmentedLagrangian(problem, delta)

    def smooth(Z: Tensor) -> tuple[Tensor, Tensor]:
        return al.value_and_grad(Z)

    def value(Z: Tensor) -> Tensor:
        return al.value_and_grad(Z, grad=False)[0]

    history: list[dict] = []
    early_repair, zero_certified = False, False
    zero_objective = float((problem.Y * problem.Y).sum()) / (2 * problem.n)
    violation, lower, gap, optimality = math.inf, -math.inf, math.inf, math.inf
    converged, inner_step, outer, total = False, step, 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_outer, desc="relu convex solve (augmented Lagrangian)", leave=False)
    try:
        for outer in range(1, max_outer + 1):
            inner_tol = max(tol, min(violation, 1e-2))

            def inner_check(Z: Tensor, f: float, grad: Tensor) -> tuple[bool, dict]:
                opt = float(problem.min_norm_subgradient(Z, grad))
                return opt <= inner_tol, {"optimality": opt}

            Z, info = fista(smooth, value, problem.soft_threshold, problem.penalty, inner_check, Z,
                            step=inner_step, max_iter=inner_iter, check_every=5, **_rounding(problem),
                            deadline=deadline,
                            what=f"relu convex solve (outer iteration {outer}, delta={al.delta:.3g})")
            total += info["iterations"]
            inner_step = info["step"]
            previous = violation
            cert = al.update(Z)
            violation = cert["violation"]
            G = cert["lagrangian_grad"]
            optimality = float(problem.min_norm_subgradient(Z, G))
            lower = max(lower, problem.dual_value(cert["residual_sq"], cert["residual_dot_y"],
                                                  float(problem.group_norms(G).max())))
            objective = cert["residual_sq"] / (2 * problem.n) + float(problem.penalty(Z))
            gap = relative_gap(objective, lower)
            history.append({"outer": outer, "objective": objective, "optimality": optimality, "gap": gap,
                            "lower_bound": lower, "violation": violation, "delta": al.delta,
                            "inner_iterations": info["iterations"], "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.set_postfix(objective=f"{objective:.6g}", violation=f"{violation:.1e}", gap=f"{gap:.1e}")
                bar.update(1)
            if certified(violation, gap, optimality, tol_violation, gap_tol, tol):
                converged = True
                break
            if relative_gap(zero_objective, lower) <= gap_tol:
                # 0 is feasible and within gap_tol of the dual bound: the optimum is (certifiably) 0. The ReLU
                # program's own threshold lies below lam_max and has no closed form; this catches it.
                Z, zero_certified = torch.zeros_like(Z), True
                break
            if repair and violation > tol_violation and outer % repair_every == 0:
                # Certify by repair: shift onto the cones (same predictions) and accept the exactly feasible
                # point when its objective is within gap_tol of the lower bound -- a true certificate,
                # often long before the multipliers drive the violation itself below tol_violation.
                V2, W2 = repair_feasibility(problem, Z[0], Z[1])
                fixed = problem.relu_objective(V2, W2)
                if relative_gap(fixed, lower) <= gap_tol:
                    Z, early_repair = torch.stack([V2, W2]), True
                    history[-1].update(repaired_objective=fixed)
                    break
            if time.perf_counter() > deadline:
                break
            if violation <= tol_violation and len(history) > 1 and \
                    abs(objective - history[-2]["objective"]) <= rtol * abs(objective):
                break  # feasible and stalled (converged stays False unless certified)
            if info["converged"] and violation > tol_violation and violation > 0.25 * previous:
                # Solved the inner problem, yet the violation is not falling fast enough: stiffen the
                # penalty (only then: an inexact inner solve is the likelier cause, and a stiffer penalty
                # makes the inner problems harder).
                al.delta *= 2
    finally:
        if bar is not None:
            bar.close()
    V, W, objective, final_violation, repaired = _repaired(problem, Z, repair, repair_rtol)
    repaired = repaired or early_repair
    gap = relative_gap(objective, lower)
    # re-judged on the returned weights (the repair changes the objective by <= repair_rtol)
    converged = certified(final_violation, gap, optimality, tol_violation, gap_tol, tol)
    status = "certified" if converged else ("time limit" if time.perf_counter() > deadline else "not certified")
    return SolverResult({"V": V, "W": W}, objective, optimality, final_violation, converged, total, inner_step,
                        history, repaired, gap, lower, lam_max, zero_certified, status=status)


RELU_METHODS = ("projected", "augmented_lagrangian")


def solve_relu(problem: ConvexProblem, V0: Tensor | None = None, W0: Tensor | None = None,
               method: str = "projected", tol: float = 1e-6, tol_violation: float = 1e-6, gap_tol: float = 1e-6,
               max_iter: int | None = None, step: float | None = None, start: str = "zero", repair: bool = True,
               repair_rtol: float = 1e-6, time_limit: float = math.inf, progress: bool = False,
               check_every: int = 10, projection_tol: float | None = None, projection_rounds: int = 200,
               delta: float | None = None, max_outer: int = 50, inner_iter: int = 2000, rtol: float = 0.0,
               repair_every: int = 10) -> SolverResult:
    """The exact ReLU program. Converged by `certified`: violation <= tol_violation and (relative duality
    gap <= gap_tol or optimality <= tol), judged on the returned weights.

    lam at or above the program's own zero threshold (`ConvexProblem.relu_lam_max`, certified by cone
    projections) returns 0 at once (zero_optimum True, iterations 0); `lam_max` of the result is that
    threshold.
    method "projected" (default): R-FISTA on Z = (V, W) whose prox is exact: the projection of every column
    onto its cone K_i (`cones.ConeProjector`) followed by the group soft-threshold (for a cone K,
    prox of lam ||.|| + indicator_K is soft(proj_K(.)), Moreau's decomposition). Every iterate is feasible to
    `projection_tol` (default tol_violation / 10; `projection_rounds` caps the constraint-generation rounds
    of one projection: a projection left above tolerance is reported, never certified). Dual bound every
    `check_every` iterations: the Fenchel dual of `problem.dual_value` with the cone dual norm
    max_g ||proj_{K_i}(-+ grad_g)||, bounded above through the projections' multipliers. optimality: the
    norm of the proximal-gradient map (Z - prox(Z - t grad)) / t, 0 exactly at an optimum. max_iter default
    max_outer * inner_iter.
    method "augmented_lagrangian": the multiplier method of the module docstring (delta, max_outer,
    inner_iter, rtol, repair_every are its settings).
    step: the first step; default (None) 1 / (2 x `pattern_curvature`) for "projected", 10 for the augmented
    Lagrangian. time_limit (s, from the call, setup included): checked inside the line search and between a
    projection's NNLS solves; the best feasible point measured (at a check, or a prox output whose loss the
    line search computed) is returned (converged False) when the last one was cut short.
    start: "zero" or "gated" (the cone decomposition of the gated solution; a poor start for "projected":
    its norms are large); V0, W0 override it.
    repair: finally make the solution exactly feasible by `repair_feasibility` (same predictions), kept only
    if that raises the objective by <= repair_rtol (relative).
    """
    if method not in RELU_METHODS:
        raise ValueError(f"relu convex solve: method must be one of {RELU_METHODS}, got {method!r}")
    if start not in ("zero", "gated"):
        raise ValueError(f"relu convex solve: start must be 'zero' or 'gated', got {start!r}")
    lam_max = problem.relu_lam_max()
    if problem.lam >= lam_max:
        return _zero_result(problem, ("V", "W"), lam_max)
    if method == "augmented_lagrangian":
        step = 10.0 if step is None else step
        return _solve_relu_al(problem, V0, W0, delta, tol, tol_violation, gap_tol, max_outer, inner_iter, step,
                              rtol, start, repair, repair_rtol, repair_every, time_limit, progress, lam_max)
    if max_iter is None:
        max_iter = max_outer * inner_iter
    return _solve_relu_projected(problem, V0, W0, tol, tol_violation, gap_tol, max_iter, step, start, repair,
                                 repair_rtol, time_limit, progress, check_every,
                                 tol_violation / 10 if projection_tol is None else projection_tol,
                                 projection_rounds, lam_max)


def _relu_start(problem: ConvexProblem, start: str, step: float, tol: float, gap_tol: float, max_iter: int,
                time_limit: float) -> tuple[Tensor, Tensor]:
    if start == "gated":
        gated = solve_gated(problem, step=step, tol=tol, gap_tol=gap_tol, max_iter=max_iter, time_limit=time_limit)
        return cone_decomposition(problem, gated.weights["U"])
    return problem.zeros(), problem.zeros()


def _solve_relu_projected(problem: ConvexProblem, V0: Tensor | None, W0: Tensor | None, tol: float,
                          tol_violation: float, gap_tol: float, max_iter: int, step: float, start: str,
                          repair: bool, repair_rtol: float, time_limit: float, progress: bool, check_every: int,
                          projection_tol: float, projection_rounds: int, lam_max: float) -> SolverResult:
    t0 = time.perf_counter()
    if not (isinstance(projection_tol, (int, float)) and projection_tol > 0):
        raise ValueError(f"relu convex solve: projection_tol must be > 0, got {projection_tol!r}")
    if V0 is None or W0 is None:
        V0, W0 = _relu_start(problem, start, 10.0 if step is None else step, tol, gap_tol, max_iter, time_limit)
    Z0 = torch.stack([V0.to(problem.zeros()), W0.to(problem.zeros())])         # (2, P, d, c)
    # Every rejected line-search step costs a full set of cone projections: start near the step the line
    # search will accept (the curvature along one pattern), not at an arbitrary 10.
    if step is None:
        step = 1.0 / (2 * pattern_curvature(problem))
    primal = ConeProjector(problem, tol=projection_tol, max_rounds=projection_rounds)
    dual = ConeProjector(problem, tol=projection_tol, max_rounds=projection_rounds)
    primal.deadline = dual.deadline = t0 + time_limit   # a projection cut short is reported, never certified
    lam = problem.lam
    b = problem.predict_adjoint(problem.Y) / problem.n          # <r, Y> = n <V - W, b> - ||Y||^2
    yy = float((problem.Y * problem.Y).sum())
    state = {"t": step, "lower": -math.inf, "optimality": math.inf, "feasible": None}

    def smooth(Z: Tensor) -> tuple[Tensor, Tensor]:
        f, G = problem.loss_and_grad(Z[0] - Z[1])
        return f, torch.stack([G, -G])

    def value(Z: Tensor) -> Tensor:
        f = problem.loss(Z[0] - Z[1])
        for out, violation in state.get("outs") or []:
            if out is Z and violation <= tol_violation:
                # a point the prox returned, measured by its projection's check over every row and by this loss
                # over every patch: kept when it is the best feasible one so far, so a solve cut short by its
                # time limit returns its last measured point, not the last one its (costly) checks reached
                objective = float(f) + float(problem.penalty(Z))
                if state["feasible"] is None or objective < state["feasible"][0]:
                    state["feasible"] = (objective, Z.clone(), violation)
        return f

    def live_columns(Z: Tensor, level: float) -> Tensor:
        """(2, P, c): the columns of groups whose norm exceeds level (the others project and threshold to 0
        or stay inside the bound: ||proj_K z|| <= ||z||)."""
        live = problem.group_norms(Z) > level
        return live if problem.group_by == "channel" else live.unsqueeze(-1).expand(*live.shape, Z.shape[-1])

    def prox(Z: Tensor, t: float, record: bool = True) -> Tensor:
        out = problem.soft_threshold(primal.project(Z, live_columns(Z, t * lam)), t)
        if record:  # the violations of the last points returned: `check` judges the one FISTA accepted
            state["t"] = t
            state["outs"] = (state.get("outs") or [])[-2:] + [(out, primal.last_violation)]
        return out

    def violation_of(Z: Tensor) -> float:
        for out, violation in state.get("outs") or []:
            if out is Z:
                return violation
        return problem.constraint_violation(Z[0], Z[1])   # (not a point the prox returned: measured)

    def check(Z: Tensor, f: float, grad: Tensor) -> tuple[bool, dict]:
        violation = violation_of(Z)
        # dual feasibility of z = s r / n: for every group, max over its cone of <-+grad, u> <= lam / s
        g = -grad                                                  # (2, P, d, c): directions V, W
        # the cone norms' upper bounds from the prox's own multipliers' rows (cheap, tight near the optimum);
        # the largest ones, which set the dual scale, refined by full projections while they exceed lam
        upper = primal.norm_upper(g)                               # (2, P, c)
        refined = torch.zeros_like(upper, dtype=torch.bool)
        for _ in range(4):
            values = group_values(problem, upper)                  # (2, P, c) or (2, P)
            done = refined if problem.group_by == "channel" else refined.all(-1)
            if bool(done.flatten()[values.argmax()]) or time.perf_counter() > dual.deadline:
                break     # the largest bound is exact already: refining the others cannot lower the max
            need = (values > lam * (1 + 1e-4)) & ~done
            if not bool(need.any()):
                break
            pick = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
            pick[torch.where(need.flatten(), values.flatten(), -1.0).topk(min(int(need.sum()), 64)).indices] = True
            pick = pick.reshape(values.shape)
            live = pick if problem.group_by == "channel" else pick.unsqueeze(-1).expand(upper.shape)
            exact = columns(dual.project(g, live)).norm(dim=1).reshape(upper.shape)
            upper = torch.where(live, torch.minimum(upper, exact), upper)
            refined |= live
        dual_norm_max = float(group_values(problem, upper).max())
        U = Z[0] - Z[1]
        lower = problem.dual_value(2 * problem.n * f, problem.n * float((U * b).sum()) - yy, dual_norm_max)
        state["lower"] = max(state["lower"], lower)
        objective = f + float(problem.penalty(Z))
        if violation <= tol_violation and (state["feasible"] is None or objective <= state["feasible"][0]):
            state["feasible"] = (objective, Z.clone(), violation)   # returned when the time runs out
        gap = relative_gap(objective, state["lower"])
        opt = math.inf
        if tol > 0:
            t = state["t"]
            mapped = prox(Z - t * grad, t, record=False)
            opt = float((Z - mapped).norm()) / t
        state["optimality"] = opt
        return certified(violation, gap, opt, tol_violation, gap_tol, tol), {
            "optimality": opt, "gap": gap, "lower_bound": state["lower"], "violation": violation,
            "dual_norm_max": dual_norm_max}

    # the start's projection alone (no shrinkage): a warm start's many small columns (norms ~ step x lam on the
    # benchmark's problems) would all be thresholded to 0 by a full prox step
    Z1 = prox(Z0, 0.0)
    state["t"] = step
    violation = violation_of(Z1)
    if violation <= tol_violation:     # the first point: a feasible fallback however soon the time runs out
        state["feasible"] = (float(value(Z1)) + float(problem.penalty(Z1)), Z1.clone(), violation)
    fista_start = time.perf_counter()
    Z, info = fista(smooth, value, prox, problem.penalty, check, Z1, step=step, max_iter=max_iter,
                    check_every=check_every, **_rounding(problem), deadline=t0 + time_limit,
                    progress=progress, what="relu convex solve (projected R-FISTA)")
    for h in info["history"]:                        # seconds from the solve's start (setup included)
        h["seconds"] += fista_start - t0
    late = time.perf_counter() > t0 + time_limit
    if late and state["feasible"] is not None:
        # out of time: the best feasible point measured (objective in float64 over all patches, at a check or in
        # the line search; violation over every row by its projection), with no repair or re-measuring pass
        # past the limit (at n = 100,000 those passes overran a 90 s limit by 18 s)
        objective, Zf, violation = state["feasible"]
        V, W, repaired = Zf[0].clone(), Zf[1].clone(), False
    else:
        V, W, objective, violation, repaired = _repaired(problem, Z, repair, repair_rtol)
        if violation > tol_violation and state["feasible"] is not None:
            # the last iterate's projection was cut short: return the best checked feasible one (not repaired)
            objective, Zf, violation = state["feasible"]
            V, W, repaired = Zf[0].clone(), Zf[1].clone(), False
    gap = relative_gap(objective, state["lower"])
    converged = certified(violation, gap, state["optimality"], tol_violation, gap_tol, tol)
    status = "certified" if converged else (
        "time limit: best checked feasible iterate" if late and violation <= tol_violation else
        "time limit: no feasible iterate" if late else "iteration limit")
    return SolverResult({"V": V, "W": W}, objective, state["optimality"], violation, converged, info["iterations"],
                        info["step"], info["history"], repaired, gap, state["lower"], lam_max, status=status)


def pattern_curvature(problem: ConvexProblem, iterations: int = 12, seed: int = 0) -> float:
    """max_i lambda_max(X^T D_i X / n): the loss's curvature along one pattern's weights, by batched power
    iteration (matrix-free). The curvature along a sparse iterate's few active groups is near this, far
    below that of the whole Hessian (~P times larger when the patterns overlap), so 1 / (2 x this) is a
    step the line search mostly accepts (f(V, W) = loss(V - W) doubles the curvature)."""
    P, d, _ = problem.shape
    U = torch.randn((P, d, 1), generator=torch.Generator().manual_seed(seed), dtype=problem.dtype)
    U = U.to(problem.X.device) / U.norm(dim=1, keepdim=True)
    lam = torch.zeros(P, dtype=problem.dtype, device=problem.X.device)
    for _ in range(iterations):
        HU = sum(problem.lower(problem.D[r].unsqueeze(-1) * problem.lift(U, r), r)
                 for r in problem.blocks()) / problem.n
        lam = (HU * U).sum((1, 2))                                   # Rayleigh quotients (||U_i|| = 1)
        U = HU / HU.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return max(float(lam.max()), 1e-300)


def _repaired(problem, Z, repair: bool, repair_rtol: float):
    """The solver's final (V, W), its ReLU objective and constraint violation, and whether the feasibility
    repair was applied: it is kept only when it raises the objective by at most `repair_rtol` (relative)."""
    V, W = Z[0].clone(), Z[1].clone()
    objective, repaired = problem.relu_objective(V, W), False
    violation = problem.constraint_violation(V, W)
    if repair and violation > 0:
        V2, W2 = repair_feasibility(problem, V, W)
        fixed = problem.relu_objective(V2, W2)
        if fixed - objective <= repair_rtol * abs(objective):
            V, W, objective, repaired = V2, W2, fixed, True
            violation = problem.constraint_violation(V, W)
    return V, W, objective, violation, repaired
