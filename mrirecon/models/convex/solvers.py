"""Solvers for the convex programs of `problem.py`.

gated ReLU   R-FISTA (Mishkin, Sahiner and Pilanci, ICML 2022): accelerated proximal gradient with a
             backtracking line search (step x0.8 until the quadratic upper bound holds), step growth
             (x1.25 after a step accepted at once, i.e. when the bound had slack), gradient-mapping restarts
             (O'Donoghue and Candes: restart the momentum when <y_k - x_{k+1}, x_{k+1} - x_k> > 0) and the
             group soft-threshold prox. Stops when the min-norm subgradient is <= tol.
ReLU         augmented Lagrangian for the cone constraints C(V) = (2 D_i - I) X V_i >= 0: inner R-FISTA on
             the loss + (1 / 2 delta) ||(gamma - delta C)_+||^2 (+ the same for W), multipliers
             gamma <- (gamma - delta C)_+, penalty delta doubled when the violation does not fall by 4x
             after an accurate inner solve. Starts from 0 (or a given point, or the cone decomposition of a
             gated solution); a final repair makes the answer exactly feasible when that is cheap.
Both report the objective, the min-norm subgradient (of the Lagrangian for ReLU) and the constraint
violation, and stop with SolverDiverged -- never NaN weights -- when the objective is not finite or explodes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .problem import ConvexProblem


class SolverDiverged(RuntimeError):
    """The objective became non-finite or exploded; the message names the setting to change."""


@dataclass
class SolverResult:
    weights: dict[str, Tensor]        # {"U"} (gated) or {"V", "W"} (ReLU), each (P, d, c)
    objective: float                  # of the convex program itself (no augmented-Lagrangian terms)
    optimality: float                 # min-norm subgradient norm (of the Lagrangian for ReLU)
    violation: float                  # max cone-constraint violation (0 for the gated program)
    converged: bool
    iterations: int
    step: float                       # the last accepted step size
    history: list[dict] = field(default_factory=list)  # per check: iteration, objective, optimality, ...
    repaired: bool = False            # ReLU: made exactly feasible by repair_feasibility


def _check_finite(value: float, start: float, what: str, it: int, step: float, hint: str) -> None:
    # "Explodes": far above the starting objective, which a descent method with a valid step never is.
    if not math.isfinite(value) or value > 1e8 * max(abs(start), 1e-12):
        raise SolverDiverged(f"{what}: objective {value!r} at iteration {it} (start {start:.4g}) with step={step:.3g}: "
                             f"diverged; {hint}")


def fista(smooth: Callable[[Tensor], tuple[Tensor, Tensor]], value: Callable[[Tensor], Tensor],
          prox: Callable[[Tensor, float], Tensor], penalty: Callable[[Tensor], Tensor],
          subgradient: Callable[[Tensor, Tensor], Tensor], x0: Tensor, step: float = 10.0, tol: float = 1e-6,
          max_iter: int = 10_000, line_search: bool = True, check_every: int = 1, progress: bool = False,
          what: str = "fista") -> tuple[Tensor, dict]:
    """R-FISTA for min f(x) + h(x): `smooth` gives (f, grad f), `value` f alone, `prox(z, t)` = prox_{t h}(z),
    `subgradient(x, grad)` the min-norm subgradient norm. Returns (x, info)."""
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
            first_try = True
            while True:
                x_new = prox(y - step * g_y, step)
                f_new = float(value(x_new))
                diff = x_new - y
                bound = float(f_y + (g_y * diff).sum() + (diff * diff).sum() / (2 * step))
                if not line_search or (math.isfinite(f_new) and f_new <= bound + 1e-12 * abs(bound)):
                    break
                step *= 0.8
                first_try = False
                if step < 1e-30:
                    raise SolverDiverged(f"{what}: line search shrank the step below 1e-30 at iteration {it}; "
                                         "the data or the objective is not finite/scaled")
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
            if it % check_every == 0 or it == max_iter:
                _, g_x = smooth(x)
                opt = float(subgradient(x, g_x))
                info["optimality"] = opt
                info["history"].append({"iteration": it, "objective": objective, "optimality": opt, "step": step,
                                        "seconds": time.perf_counter() - t0})
                if bar is not None:
                    bar.set_postfix(objective=f"{objective:.6g}", optimality=f"{opt:.2e}")
                if opt <= tol:
                    info["converged"] = True
                    break
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    info["step"] = step
    return x, info


def solve_gated(problem: ConvexProblem, U0: Tensor | None = None, step: float = 10.0, tol: float = 1e-6,
                max_iter: int = 10_000, line_search: bool = True, check_every: int = 1,
                progress: bool = False) -> SolverResult:
    """The gated-ReLU group lasso by R-FISTA."""
    U0 = problem.zeros() if U0 is None else U0.to(problem.X)
    U, info = fista(problem.loss_and_grad, problem.loss, problem.soft_threshold, problem.penalty,
                    problem.min_norm_subgradient, U0, step=step, tol=tol, max_iter=max_iter,
                    line_search=line_search, check_every=check_every, progress=progress, what="gated convex solve")
    return SolverResult({"U": U}, problem.gated_objective(U), info["optimality"], 0.0, info["converged"],
                        info["iterations"], info["step"], info["history"])


def _gate_shift(problem: ConvexProblem, cone_values: Tensor) -> Tensor:
    """(P, c): the smallest t >= 0 with cone_values + t |X g_i| >= 0 on every row. The gate g_i lies
    inside its own cone ((2 D_i - I) X g_i = |X g_i|), so adding t g_i to a column moves it into the cone."""
    Xg = (problem.X @ problem.gates).abs().unsqueeze(-1)   # (n, P, 1)
    need = (-cone_values).clamp_min(0)
    on_plane = Xg == 0
    if bool((need > 0).logical_and(on_plane).any()):
        raise ValueError("convex model: a patch lies on a gate's hyperplane (X g_i = 0) but outside the cone; "
                         "resample the gates (another seed)")
    t = torch.where(on_plane, torch.zeros_like(need), need / Xg.clamp_min(1e-300)).amax(0)
    return t * (1 + 1e-9)  # a hair inside, so rounding does not leave a 1e-17 violation


def cone_decomposition(problem: ConvexProblem, U: Tensor) -> tuple[Tensor, Tensor]:
    """(V, W) with V - W = U and both exactly in the cones (2 D_i - I) X (.)_i >= 0.

    W_i[:, c] = t g_i and V_i[:, c] = U_i[:, c] + t g_i with the smallest t making V feasible (W is, as
    the gate lies in its cone). The gated and ReLU models then predict the same on the training patches;
    the norms are not minimal (a feasible point, not the ReLU program's answer).
    """
    W = problem.gates.T.unsqueeze(-1) * _gate_shift(problem, problem.cone(U)).unsqueeze(1)
    return U + W, W


def repair_feasibility(problem: ConvexProblem, V: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Make a nearly feasible (V, W) exactly feasible without changing V - W (so the predictions stay):
    add t g_i to both V_i[:, c] and W_i[:, c], t the smallest shift that fixes both. The objective grows
    by at most 2 lam t ||g_i|| per column, i.e. in proportion to the violation that was left."""
    t = torch.maximum(_gate_shift(problem, problem.cone(V)), _gate_shift(problem, problem.cone(W)))
    shift = problem.gates.T.unsqueeze(-1) * t.unsqueeze(1)  # (P, d, c)
    return V + shift, W + shift


def solve_relu(problem: ConvexProblem, V0: Tensor | None = None, W0: Tensor | None = None,
               delta: float | None = None, tol: float = 1e-6, tol_violation: float = 1e-6, max_outer: int = 50,
               inner_iter: int = 2000, step: float = 10.0, rtol: float = 0.0, gated_start: bool = False,
               repair: bool = True, repair_rtol: float = 1e-6, progress: bool = False) -> SolverResult:
    """The exact ReLU program by an augmented Lagrangian (see the module docstring).

    Starts from V0, W0, else from the cone decomposition of a gated solution (gated_start: feasible but
    with large norms, usually a worse start than 0), else from 0. Converged when the constraint violation
    is <= tol_violation and the Lagrangian's min-norm subgradient is <= tol; also stops (converged=False)
    when feasible and the objective changed by <= rtol (relative) over an outer iteration.
    Inner solves stop at max(tol, min(violation, 1e-2)): no need to solve accurately while far from feasible.
    repair: finally make the solution exactly feasible by `repair_feasibility` (same predictions), kept only
    if that raises the objective by <= repair_rtol (relative): the shift is large when a patch lies close to
    a gate's hyperplane. The reported objective and violation are those of the returned weights.
    """
    if delta is None:
        # pyscnn uses 1000 / n; 10 / n conditioned the inner solves better in our runs (same 1/(2n) loss).
        delta = 10.0 / problem.n
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"relu convex solve: delta (the augmented-Lagrangian penalty) must be > 0, got {delta!r}")
    if V0 is None or W0 is None:
        if gated_start:
            gated = solve_gated(problem, step=step, tol=tol, max_iter=inner_iter)
            V0, W0 = cone_decomposition(problem, gated.weights["U"])
        else:
            V0, W0 = problem.zeros(), problem.zeros()
    Z = torch.stack([V0.to(problem.X), W0.to(problem.X)])    # (2, P, d, c)
    sign = torch.tensor([1.0, -1.0], dtype=problem.X.dtype, device=problem.X.device)
    gamma = problem.X.new_zeros((2, problem.n, *problem.shape[::2]))  # multipliers (2, n, P, c)

    X, D, S, n = problem.X, problem.D.unsqueeze(-1), problem.S.unsqueeze(-1), problem.n

    def parts(Z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # One product X Z serves the prediction (D X (V - W)) and both cones (S X V, S X W).
        XZ = torch.einsum("nd,spdc->snpc", X, Z)                       # (2, n, P, c)
        r = (D * (XZ[0] - XZ[1])).sum(1) - problem.Y                     # (n, c)
        h = (gamma - delta * S * XZ).clamp_min(0)                        # (2, n, P, c)
        f = (r * r).sum() / (2 * n) + ((h * h).sum() - (gamma * gamma).sum()) / (2 * delta)
        return f, r, h

    def value(Z: Tensor) -> Tensor:
        return parts(Z)[0]

    def smooth(Z: Tensor) -> tuple[Tensor, Tensor]:
        f, r, h = parts(Z)
        back = sign.view(2, 1, 1, 1) * (D * r.unsqueeze(1) / n) - S * h   # (2, n, P, c)
        return f, torch.einsum("nd,snpc->spdc", X, back)

    def cone2(Z: Tensor) -> Tensor:
        return S * torch.einsum("nd,spdc->snpc", X, Z)

    history: list[dict] = []
    t0 = time.perf_counter()
    violation = math.inf
    converged, info, outer, total = False, {"optimality": math.inf, "step": step}, 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_outer, desc="relu convex solve (augmented Lagrangian)", leave=False)
    try:
        for outer in range(1, max_outer + 1):
            Z, info = fista(smooth, value, problem.soft_threshold, lambda Z: problem.penalty(Z),
                            problem.min_norm_subgradient, Z, step=info["step"], tol=max(tol, min(violation, 1e-2)),
                            max_iter=inner_iter,
                            check_every=5, what=f"relu convex solve (outer iteration {outer}, delta={delta:.3g})")
            total += info["iterations"]
            C = cone2(Z)
            gamma = (gamma - delta * C).clamp_min(0)
            previous, violation = violation, float((-C).clamp_min(0).max())
            objective, last = problem.relu_objective(Z[0], Z[1]), (history[-1]["objective"] if history else math.inf)
            history.append({"outer": outer, "objective": objective, "optimality": info["optimality"],
                            "violation": violation, "delta": delta, "inner_iterations": info["iterations"],
                            "seconds": time.perf_counter() - t0})
            if bar is not None:
                bar.set_postfix(objective=f"{objective:.6g}", violation=f"{violation:.1e}")
                bar.update(1)
            if violation <= tol_violation and info["optimality"] <= tol:
                converged = True
                break
            if violation <= tol_violation and abs(objective - last) <= rtol * abs(objective):
                break
            if info["converged"] and violation > tol_violation and violation > 0.25 * previous:
                # Solved the inner problem, yet the violation is not falling fast enough: stiffen the
                # penalty (only then: an inexact inner solve is the likelier cause, and a stiffer penalty
                # makes the inner problems harder).
                delta *= 2
    finally:
        if bar is not None:
            bar.close()
    V, W = Z[0].clone(), Z[1].clone()
    objective, repaired = problem.relu_objective(V, W), False
    if repair and problem.constraint_violation(V, W) > 0:
        V2, W2 = repair_feasibility(problem, V, W)
        fixed = problem.relu_objective(V2, W2)
        if fixed - objective <= repair_rtol * abs(objective):
            V, W, objective, repaired = V2, W2, fixed, True
    return SolverResult({"V": V, "W": W}, objective, info["optimality"], problem.constraint_violation(V, W),
                        converged, total, info["step"], history, repaired)
