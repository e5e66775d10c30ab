"""Benchmark: time to solve the convex two-layer ReLU programs, ours against the method's reference code
(pyscnn, Mishkin, Sahiner and Pilanci) and an interior-point solver (cvxpy + Clarabel), in one run.

Problems: k x k patches (default 5 x 5, 2 channels: d = 50) of noisy synthetic knee slices (128 x 128,
complex, max-normalised, noise 0.05), residual targets, n random patches, P random gates, group_by
"channel", lam along a path of fractions of each program's own zero threshold (gated: the closed form
`ConvexProblem.lam_max`; ReLU: `ConvexProblem.relu_lam_max_bracket`, cone projections, certified bracket), so no
optimum is trivial.

Solvers, each capped by a time limit (competitors run in a subprocess, killed at the cap):
  ours, Gram     R-FISTA on the Gram matrix (float64), when it fits the memory budget (--gram-budget-mb)
  ours, matrix-free  gated: R-FISTA by patch products, float32 patches, float64 accumulation, polished on
                 float64 patches once the float32 gap stalls; ReLU: projected R-FISTA (exact cone
                 projections, screened constraint checks, dual bound from the prox's multipliers), float64
                 patches (its cone checks need ~1e-8 absolute accuracy of (2 D_i - I) X u, below float32's)
  pyscnn 0.0.10  its R-FISTA (gated) and augmented Lagrangian (ReLU), defaults but tighter tolerances,
                 unitize_data off, float64, lam / c (it scales the loss by 1 / (2 n c))
  cvxpy 1.9.3    one matrix variable holding all patterns (its fastest formulation), Clarabel
Every returned or recorded point is scored by one common objective (ours, float64) and constraint
violation. p* = the best objective among points with violation <= 1e-6 (for ReLU) found by any solver;
the best dual bound found (ours) brackets it from below. Reported: time to objective <= p* (1 + 1e-4) with
violation <= 1e-6. pyscnn's progress is observed by wrapping its metrics hook (every 10 iterations; its
own metric computation counts in its time).

    flock /tmp/mrirecon-bench.lock python benchmarks/convex_solvers.py [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, command_line, load_average, machine_info, now_utc, write_json, write_markdown  # noqa: E402

from mrirecon.models.convex import ConvexProblem, sample_gates, solve_gated, solve_relu  # noqa: E402
from mrirecon.models.convex.patches import patch_matrix, pixel_matrix  # noqa: E402
from mrirecon.synthetic.phantoms import knee2d  # noqa: E402

ACCURACY = 1e-4
VIOLATION = 1e-6
GATED_SPEEDUP_GOAL = 10.0
# (n, P, lam fractions of each program's own threshold, gated cap s, relu cap s)
DEFAULT_PLAN = [(400, 16, (0.5, 0.1), 10, 60), (1000, 32, (0.5,), 20, 45), (4000, 64, (0.5,), 30, 60),
                (20000, 128, (0.5,), 30, 60), (100000, 256, (0.5,), 60, 90)]
THRESHOLD_ROUNDS = 20   # constraint-generation rounds for the ReLU threshold's bracket (it is certified at any)


def build_problem(n: int, P: int, lam: float, k: int = 5, seed: int = 0, dtype=torch.float64,
                  device: str = "cpu", **kw) -> ConvexProblem:
    rng = np.random.default_rng(seed)
    clean = torch.from_numpy(knee2d(rng, 8, (128, 128))).to(torch.complex128)
    clean = clean / clean.abs().amax(dim=(-2, -1), keepdim=True)
    chans = torch.stack([clean.real, clean.imag], 1)
    noisy = chans + 0.05 * torch.from_numpy(rng.standard_normal(chans.shape))
    X, Y = patch_matrix(noisy, k), pixel_matrix(chans) - pixel_matrix(noisy)
    if n > X.shape[0]:
        raise ValueError(f"--sizes: n={n} > {X.shape[0]} pixels available")
    pick = torch.from_numpy(rng.permutation(X.shape[0])[:n])
    X, Y = X[pick], Y[pick]
    gates = sample_gates(X, P, seed=seed)
    return ConvexProblem(X.to(device=device, dtype=dtype), Y.to(device), gates.to(device), lam, "channel", **kw)


# ---------------------------------------------------------------------------------------------- workers
class _Cap(Exception):
    pass


def _alarm(seconds: float) -> None:
    def handler(signum, frame):
        raise _Cap()
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def worker_pyscnn(problem: ConvexProblem, program: str, cap: float) -> dict:
    """pyscnn's own solver; snapshots of its weights at every metrics step (time, weights)."""
    from scnn.models import ConvexGatedReLU, ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.metrics import Metrics
    from scnn.solvers import AL, RFISTA
    import scnn.private.methods.optimization_procedures.iterative as it_mod
    import scnn.private.methods.optimization_procedures.double_loop_procedure as dl_mod

    P, d, c = problem.shape
    X, Y, G = (t.numpy() for t in (problem.X.double(), problem.Y, problem.gates.double()))
    snaps: list[tuple[float, np.ndarray]] = []
    t0 = [0.0]
    for mod in (it_mod, dl_mod):
        original = mod.update_metrics

        def observed(metrics_log, model, *a, _orig=original, **kw):
            w = model.weights
            snaps.append((time.perf_counter() - t0[0], np.array(w.detach().cpu().numpy() if hasattr(w, 'detach') else w, copy=True)))
            return _orig(metrics_log, model, *a, **kw)
        mod.update_metrics = observed
    if program == "gated":
        model, solver = ConvexGatedReLU(G, c=c), None
        solver = RFISTA(model, max_iters=10**7, tol=1e-12)
    else:
        model = ConvexReLU(G, c=c)
        solver = AL(model, max_primal_iters=10**7, max_dual_iters=10**5, tol=1e-10, constraint_tol=VIOLATION)
    status = "finished"
    t0[0] = time.perf_counter()
    _alarm(cap)
    try:
        optimize_model(model, solver, Metrics(metric_freq=10), X, Y, regularizer=NeuronGL1(problem.lam / c),
                       return_convex=True, unitize_data=False, dtype="float64")
    except _Cap:
        status = "time limit"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"status": status, "seconds": time.perf_counter() - t0[0],
            "snapshots": [(t, w.tolist()) for t, w in snaps[:: max(1, len(snaps) // 200)] + snaps[-1:]]}


def worker_cvxpy(problem: ConvexProblem, program: str, cap: float) -> dict:
    """One matrix variable per sign (all patterns side by side), Clarabel (time-limited in-solver too)."""
    import cvxpy as cp

    P, d, c = problem.shape
    X, Y, D = (t.double().cpu().numpy() for t in (problem.X, problem.Y, problem.D))
    Dc, Sc = np.repeat(D, c, axis=1), np.repeat(2 * D - 1, c, axis=1)    # column i * c + ch
    E = np.tile(np.eye(c), (P, 1))                                        # (P c, c): sum over patterns
    t0 = time.perf_counter()
    U = cp.Variable((d, P * c))
    if program == "gated":
        pred = cp.multiply(Dc, X @ U) @ E
        penalty, cons, variables = cp.sum(cp.norm(U, axis=0)), [], [U]
    else:
        W = cp.Variable((d, P * c))
        pred = cp.multiply(Dc, X @ (U - W)) @ E
        penalty = cp.sum(cp.norm(U, axis=0)) + cp.sum(cp.norm(W, axis=0))
        cons, variables = [cp.multiply(Sc, X @ U) >= 0, cp.multiply(Sc, X @ W) >= 0], [U, W]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(pred - Y) / (2 * problem.n) + problem.lam * penalty), cons)
    status = "finished"
    _alarm(cap)
    try:
        prob.solve(solver="CLARABEL", time_limit=max(cap - (time.perf_counter() - t0), 1.0))
    except _Cap:
        status = "time limit"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - t0
    out = {"status": status if status != "finished" else prob.status, "seconds": seconds, "snapshots": []}
    if status == "finished" and all(v.value is not None for v in variables):
        w = np.stack([v.value.reshape(d, P, c).transpose(1, 0, 2) for v in variables])
        out["snapshots"] = [(seconds, w.tolist())]
    return out


def worker_main(spec: dict) -> int:
    torch.set_num_threads(1)
    problem = build_problem(spec["n"], spec["P"], spec["lam"], spec["k"])
    fn = {"pyscnn": worker_pyscnn, "cvxpy": worker_cvxpy}[spec["solver"]]
    result = fn(problem, spec["program"], spec["cap"])
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def run_worker(spec: dict, tmp: Path) -> dict:
    out = tmp / f"{spec['solver']}_{spec['program']}_{spec['n']}_{spec['lam']:.6g}.json"
    spec = {**spec, "out": str(out)}
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["cap"] + 120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        return {"status": "killed (cap + 120 s, setup included)", "seconds": None, "snapshots": []}
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout)[-600:]
        return {"status": f"failed: {tail.strip().splitlines()[-1] if tail.strip() else proc.returncode}",
                "seconds": None, "snapshots": []}
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------- scoring
def to_ours(w: np.ndarray, program: str, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """Snapshot arrays -> {"U"} or {"V", "W"} (P, d, c) float64. pyscnn stores (c, P, d) per weight."""
    P, d, c = shape
    w = torch.as_tensor(np.asarray(w), dtype=torch.float64)
    if w.shape[-3:] == (c, P, d):
        w = w.permute(*range(w.dim() - 3), -2, -1, -3)
    if program == "gated":
        return {"U": w.reshape(P, d, c)}
    w = w.reshape(2, P, d, c)
    return {"V": w[0], "W": w[1]}


def score(problem: ConvexProblem, program: str, weights: dict[str, torch.Tensor]) -> tuple[float, float]:
    if program == "gated":
        return problem.gated_objective(weights["U"]), 0.0
    return problem.relu_objective(weights["V"], weights["W"]), problem.constraint_violation(weights["V"], weights["W"])


def ours(problem: ConvexProblem, program: str, cap: float, scorer: ConvexProblem) -> dict:
    t0 = time.perf_counter()
    if program == "gated":
        r = solve_gated(problem, tol=0.0, gap_tol=1e-6, max_iter=10**7, time_limit=cap)
    else:
        r = solve_relu(problem, tol=0.0, gap_tol=1e-6, tol_violation=VIOLATION, max_iter=10**7, time_limit=cap)
    seconds = time.perf_counter() - t0
    w = {k: v.double().cpu() for k, v in r.weights.items()}
    objective, violation = score(scorer, program, w)
    # the history's objective and violation are the solver's own (on its float32 patches for matrix-free);
    # the final point is re-scored on the common float64 problem
    trace = [(h["seconds"], h["objective"], h.get("violation", 0.0)) for h in r.history]
    return {"status": r.status, "seconds": seconds, "objective": objective,
            "violation": violation, "gap": r.gap, "lower_bound": r.lower_bound, "iterations": r.iterations,
            "trace": trace + [(seconds, objective, violation)], "repaired": r.repaired}


def competitor(spec: dict, scorer: ConvexProblem, tmp: Path) -> dict:
    raw = run_worker(spec, tmp)
    trace = []
    for t, w in raw["snapshots"]:
        obj, viol = score(scorer, spec["program"], to_ours(w, spec["program"], scorer.shape))
        trace.append((t, obj, viol))
    last = trace[-1] if trace else (None, None, None)
    return {"status": raw["status"], "seconds": raw["seconds"], "objective": last[1], "violation": last[2],
            "trace": trace}


def time_to(trace: list, target: float) -> float | None:
    for t, obj, viol in trace:
        if obj is not None and obj <= target and viol <= VIOLATION:
            return t
    return None


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--kernel-size", type=int, default=5)
    p.add_argument("--plan", help="JSON list of [n, P, [lam fractions], gated cap s, relu cap s]")
    p.add_argument("--device", default="cpu", help="device of our solvers' runs (cuda: the GPU column)")
    p.add_argument("--gram-budget-mb", type=int, default=128)
    p.add_argument("--skip", nargs="*", default=[], help="solver names to leave out (pyscnn, cvxpy)")
    p.add_argument("--programs", nargs="*", default=["gated", "relu"], choices=["gated", "relu"],
                   help="which programs' rows to run (default both)")
    p.add_argument("--cvxpy-max-nnz", type=float, default=1e8,
                   help="skip cvxpy where its constraint matrix would hold more nonzeros (n P c d) than this")
    p.add_argument("--out", default=str(ROOT / "results" / "convex" / "solvers"))
    p.add_argument("--markdown-from", help="rewrite OUT.md from a JSON this script wrote (no solving)")
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    if args.markdown_from:
        write_markdown(Path(args.out).with_suffix(".md"), markdown(json.loads(Path(args.markdown_from).read_text())))
        return 0
    torch.set_num_threads(1)
    plan = json.loads(args.plan) if args.plan else DEFAULT_PLAN
    load_before = load_average()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="convex_bench_"))
    for n, P, fracs, gated_cap, relu_cap in plan:
        base = build_problem(n, P, 0.0, args.kernel_size)
        t0 = time.perf_counter()
        from mrirecon.models.convex.cones import relu_threshold
        bracket_relu = relu_threshold(base, max_rounds=THRESHOLD_ROUNDS)
        threshold_seconds = time.perf_counter() - t0
        thresholds = {"gated": base.lam_max(), "relu": bracket_relu[1]}
        print(f"== n={n} P={base.shape[0]}: gated lam_max {thresholds['gated']:.6g}, ReLU threshold bracket "
              f"[{bracket_relu[0]:.9g}, {bracket_relu[1]:.9g}] in {threshold_seconds:.1f} s", flush=True)
        for frac in fracs:
            budget = args.gram_budget_mb * 2**20
            for program, cap in (("gated", gated_cap), ("relu", relu_cap)):
                if program not in args.programs:
                    continue
                lam = frac * thresholds[program]
                scorer = build_problem(n, P, lam, args.kernel_size)
                Pn, d, c = scorer.shape
                info = {"n": n, "gates": P, "patterns": Pn, "d": d, "c": c, "lam": lam, "lam_fraction": frac,
                        "lam_max": thresholds["gated"], "relu_threshold_bracket": list(bracket_relu),
                        "relu_threshold_seconds": threshold_seconds}
                print(f"  -- {program} lam={lam:.4g} ({frac} x its threshold)", flush=True)
                runs = {}
                if program == "gated":
                    if scorer.gram_bytes <= budget:
                        pb = build_problem(n, P, lam, args.kernel_size, device=args.device, gram=True)
                        runs["ours (Gram, float64)"] = ours(pb, program, cap, scorer)
                    else:
                        runs["ours (Gram, float64)"] = {"status": f"not run: Gram matrix {scorer.gram_bytes / 2**30:.1f} "
                                                        f"GiB > budget {args.gram_budget_mb} MiB", "trace": []}
                    pb = build_problem(n, P, lam, args.kernel_size, dtype=torch.float32, device=args.device, gram=False)
                    runs["ours (matrix-free, float32 + float64 polish)"] = ours(pb, program, cap, scorer)
                else:
                    pb = build_problem(n, P, lam, args.kernel_size, device=args.device, gram=False)
                    pb._relu_threshold = (1e-6, bracket_relu)   # computed above, timed separately
                    runs["ours (projected, matrix-free, float64)"] = ours(pb, program, cap, scorer)
                del pb
                spec = {"n": n, "P": P, "lam": lam, "frac": frac, "k": args.kernel_size, "program": program,
                        "cap": cap}
                if "pyscnn" not in args.skip:
                    runs["pyscnn 0.0.10"] = competitor({**spec, "solver": "pyscnn"}, scorer, tmp)
                nnz = n * Pn * c * d * (1 if program == "gated" else 3)
                if "cvxpy" in args.skip:
                    pass
                elif nnz > args.cvxpy_max_nnz:
                    runs["cvxpy + Clarabel"] = {"status": f"not run: {nnz:.1e} nonzeros > --cvxpy-max-nnz", "trace": []}
                else:
                    runs["cvxpy + Clarabel"] = competitor({**spec, "solver": "cvxpy"}, scorer, tmp)
                finals = [pt[1] for r in runs.values() for pt in r.get("trace", []) if pt[2] <= VIOLATION]
                best = min(finals) if finals else None
                lower = max((r.get("lower_bound", -math.inf) for r in runs.values()), default=-math.inf)
                for name, r in runs.items():
                    r["seconds_to_target"] = time_to(r.get("trace", []), best * (1 + ACCURACY)) if best else None
                    print(f"  {program:5s} {name:40s} {r['status']:>14s}  t(1e-4)={r['seconds_to_target']}  "
                          f"obj={r.get('objective')} viol={r.get('violation')} gap={r.get('gap')}", flush=True)
                rows.append({**info, "program": program, "cap_seconds": cap, "best_objective": best,
                             "best_lower_bound": lower, "runs": runs})
    load_after = load_average()
    result = {"meta": {"command": command_line(argv), "date": now_utc(), "machine": machine_info(args.device),
                       "threads": 1, "load_average_before": load_before, "load_average_after": load_after,
                       "device": args.device},
              "accuracy": ACCURACY, "violation": VIOLATION, "kernel_size": args.kernel_size, "rows": rows}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    write_markdown(out.with_suffix(".md"), markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


def _t(r: dict) -> str:
    if r.get("seconds_to_target") is not None:
        return f"{r['seconds_to_target']:.3g} s"
    if str(r.get("status", "")).startswith("not run"):
        return r["status"]
    return f"not reached ({r.get('status')})"


def _speedup(ours: dict, theirs: dict, cap: float) -> str:
    """theirs / ours time to target; a lower bound (>) when theirs did not reach it within the cap."""
    a = ours.get("seconds_to_target")
    if a is None or str(theirs.get("status", "")).startswith("not run"):
        return "-"
    b = theirs.get("seconds_to_target")
    return f"{b / a:.1f}x" if b is not None else f"> {cap / a:.0f}x"


def bracket(row: dict) -> float:
    """(p* estimate - best dual bound) / p* estimate: how well the reference optimum itself is certified."""
    if not row["best_objective"] or not math.isfinite(row["best_lower_bound"]):
        return math.inf
    return (row["best_objective"] - row["best_lower_bound"]) / row["best_objective"]


def goals(r: dict) -> list[str]:
    """One line per goal of issue 19, met or missed, from the measured rows."""
    out = []
    for row in r["rows"]:
        runs, cap, size = row["runs"], row["cap_seconds"], f"n={row['n']}, P={row['patterns']}, {row['lam_fraction']:g} x its threshold"
        best = min((v for k, v in runs.items() if k.startswith("ours") and v.get("seconds_to_target") is not None),
                   key=lambda v: v["seconds_to_target"], default=None)
        if bracket(row) > ACCURACY:
            out.append(f"- {row['program']} ({size}): p* is not certified to 1e-4 (best feasible objective "
                       f"{row['best_objective']}, best dual bound {row['best_lower_bound']:.9g}, bracket "
                       f"{bracket(row):.1e}): no solver is shown to have reached 1e-4; the times in the table are "
                       "to within 1e-4 of the best feasible point found. Goal NOT DEMONSTRATED.")
            continue
        if best is None:
            out.append(f"- {row['program']} ({size}): ours did not reach the target within {cap} s: MISSED")
            continue
        for name, goal in (("cvxpy + Clarabel", GATED_SPEEDUP_GOAL if row["program"] == "gated" else 1.0),
                           ("pyscnn 0.0.10", 1.0)):
            if name not in runs:
                continue
            if row["program"] == "relu" and name == "pyscnn 0.0.10":
                goal = None  # the issue sets no ReLU goal against pyscnn; reported for information
            theirs = runs[name]
            text = _speedup(best, theirs, cap)
            if text == "-":
                out.append(f"- {row['program']} ({size}) vs {name}: {theirs.get('status')}")
                continue
            b = theirs.get("seconds_to_target")
            ratio = (b / best["seconds_to_target"]) if b is not None else None
            if goal is None:
                verdict = "(no goal)"
            elif row["program"] == "gated" and name.startswith("cvxpy") and row["n"] < 4000:
                verdict = "(goal applies from n = 4,000)"
            elif ratio is not None:
                verdict = "met" if ratio >= goal else "MISSED"
            else:
                verdict = (f"met (it did not reach the target in the {cap} s cap)" if cap / best["seconds_to_target"] >= goal
                           else f"not decided: it did not reach the target in the {cap} s cap, ours took "
                                f"{best['seconds_to_target']:.3g} s")
            out.append(f"- {row['program']} ({size}): ours {best['seconds_to_target']:.3g} s vs {name} {text} "
                       f"(goal >= {goal:g}x) {verdict}" if goal is not None else
                       f"- {row['program']} ({size}): ours {best['seconds_to_target']:.3g} s vs {name} {text} {verdict}")
    return out


def markdown(r: dict) -> str:  # noqa: C901
    m = r["meta"]
    lines = ["# Convex solvers: ours vs pyscnn vs cvxpy + Clarabel", "",
             f"Command: `{m['command']}` (under `flock /tmp/mrirecon-bench.lock`, OMP_NUM_THREADS=1)  ",
             f"Date: {m['date']}  ",
             f"Machine: {m['machine']['cpu']}, {m['machine']['usable_cores']} usable cores, 1 thread, torch "
             f"{m['machine']['torch']}, device {m['device']} (no GPU on this machine: the `--device cuda` column "
             "was not run)  ",
             f"Load average before / after (1, 5, 15 min): {m['load_average_before']} / {m['load_average_after']}: "
             "the 2 cores were shared with other people's jobs (a load above 2 means waiting for a core), so "
             "absolute times are inflated, all solvers alike; ratios are the meaningful numbers, and caps bind "
             "sooner than on an idle machine.", "",
             f"Problems: {r['kernel_size']}x{r['kernel_size']} patches of noisy synthetic knee slices (2 channels, "
             "d = 50), residual targets, group_by channel, lam a fraction of each program's own zero threshold "
             "(gated: lam_max, closed form; ReLU: the certified bracket of `relu_lam_max_bracket`, its upper end "
             "used), so no optimum is trivial. Time to objective <= p* (1 + 1e-4) with violation <= 1e-6, "
             "p* the best such objective any solver reached, every point scored by one float64 objective; each run "
             "capped (cap column). 'p* bracket' is (p* - best dual bound) / p*: how far p* itself is certified.", "",
             "Solvers: ours (Gram): R-FISTA on the Gram matrix (float64), run where it fits the 128 MiB budget; "
             "ours (matrix-free, float32 + float64 polish): gated R-FISTA by patch products, float32 patches, float64 "
             "sums, continued on float64 patches once the float32 gap stalls (only float64 dual bounds count); ours "
             "(projected): the exact ReLU program by R-FISTA whose prox projects every column onto its cone "
             "(constraint generation + NNLS, constraint checks screened by a safe margin test) before the group "
             "soft-threshold, first step from the per-pattern curvature, dual bound from the cone norms bounded "
             "through the prox's own multipliers, float64 patches, library defaults, "
             "stopping on violation <= 1e-6 and duality gap <= 1e-6; its time excludes the ReLU threshold "
             "(computed once per data set, its own column) and includes its setup. pyscnn 0.0.10: its R-FISTA / augmented Lagrangian, tolerances tightened (1e-12 / "
             "1e-10, constraint 1e-6) so it runs to the cap, unitize_data off, float64, lam / c (it scales the loss "
             "by 1/(2nc)); its iterates are scored every 10 iterations through its metrics hook (its own metric "
             "computation counts in its time). cvxpy 1.9.3: one matrix variable per sign holding all patterns, "
             "Clarabel 0.11.1 (the fastest installed solver: Clarabel, SCS and OSQP are installed; "
             "an interior-point method), canonicalisation included; skipped where its constraint matrix would hold "
             "more than 1e8 nonzeros.", ""]
    for program in ("gated", "relu"):
        sub = [row for row in r["rows"] if row["program"] == program]
        if not sub:
            continue
        names = list(dict.fromkeys(k for row in sub for k in row["runs"]))
        relu = program == "relu"
        extra = ["threshold bracket (s)"] if relu else []
        lines += [f"## {'Gated ReLU program' if program == 'gated' else 'Exact ReLU program'}", "",
                  "| n | P | lam / threshold | lam | cap (s) | " + " | ".join(extra + names) + " | p* bracket (rel.) |",
                  "|---|---|---|---|---|" + "---|" * len(extra + names) + "---|"]
        for row in sub:
            br = f"{bracket(row):.1e}" if math.isfinite(bracket(row)) else "-"
            th = [f"[{row['relu_threshold_bracket'][0]:.6g}, {row['relu_threshold_bracket'][1]:.6g}] "
                  f"({row['relu_threshold_seconds']:.3g} s)"] if relu else []
            lines.append(f"| {row['n']} | {row['patterns']} | {row['lam_fraction']:g} | {row['lam']:.4g} | "
                         f"{row['cap_seconds']} | "
                         + " | ".join(th + [_t(row["runs"][k]) if k in row["runs"] else "-" for k in names])
                         + f" | {br} |")
        lines.append("")
    lines += ["## Goals (issue 19)", "", *goals(r), ""]
    if r.get("notes"):  # findings written after the run (what the measured numbers mean), kept with them
        lines += ["## Notes", "", *[f"- {note}" for note in r["notes"]], ""]
    lines += ["## The earlier 11x claim, corrected", "",
              "The previous version of this report said our gated solver was 11x faster than cvxpy at n = 4,000. "
              "That cvxpy run used one variable per pattern, which canonicalises about 3x slower than one matrix "
              "variable holding all patterns, and it ran under heavier load than ours: 12.4 s where the one-variable "
              "formulation takes 3.7 s on the same problem. Measured side by side with the competitor's best "
              "formulation (issue 19), the ratio was 3.5x, not 11x. This benchmark always gives cvxpy the one-variable "
              "formulation.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
