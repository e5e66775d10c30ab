"""Benchmark: pipeline-parallel GLEAM (`train.strategy: gleam_pipeline`) with K = 1, 2, ... stages.

    python benchmarks/pipeline.py --out results/pipeline                    # CPU: K=1 and K=2 in one run
    python benchmarks/pipeline.py --out results/pipeline_gpu --device cuda --stages 1 2 4 8   # GPUs

Each setting is a real launch, `torchrun --nproc_per_node K train.py`-style (the worker mode of this
script under `python -m torch.distributed.run`), on the same synthetic knee2d data and network (the
demo's: 8 PGD unrolls, residual-CNN prox of 32 channels) trained by GLEAM with one unroll per module.

Measured per setting:
  - throughput: training batches per second over the whole run on rank 0 (stage 0 is the pipeline's
    entry; the epoch-end gather waits for the last stage, so pipeline fill and drain are included);
    no validation runs (it would be the same work in every setting);
  - per stage: parameters + Adam state (exact tensor bytes) and the peak memory of one of its module
    steps (`measure_step_memory`: the CUDA allocator's peak on GPU, exact tensor accounting on CPU);
    on GPU also the stage's `torch.cuda.max_memory_allocated` over the whole run.
CPU settings: K = 1 with 1 thread, K = 2 with 1 thread per stage (scaling at equal threads per stage),
and K = 1 with as many threads as K = 2 uses in all (what a user of the same cores gains).

Goals (issue 8): >= 1.8x throughput at K = 2 with equal threads per stage; every stage's peak <= 1/K of
single-process GLEAM's parameter + optimizer memory plus one module's activations (the module-step peak).
Outputs: pipeline.json and pipeline.md under --out, written atomically, with command, date and machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

MIB = 2**20


def bench_overrides(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [f"data.root={data}", f"output_dir={out}", "name=pipeline_bench",
            f"model.num_unrolls={args.unrolls}", f"model.prox.channels={args.channels}",
            "train.strategy=gleam_pipeline", f"train.num_modules={args.unrolls}", f"train.max_epochs={args.epochs}",
            "train.check_val_every_n_epoch=100000", "data.batch_size=1", f"data.num_workers={args.workers}",
            "train.accelerator=" + ("gpu" if args.device == "cuda" else "cpu")]


# ------------------------------------------------------------------------------------------ worker
def worker(args: argparse.Namespace) -> None:
    """One rank of a launch: train its stage, then measure its memory, write rank<r>.json."""
    import torch

    from mrirecon.config import load_config
    from mrirecon.distributed import pipeline as P
    from mrirecon.training.memory import MIB as _MIB, _bytes, _optimizer_tensors, measure_step_memory
    from mrirecon.training.strategies import train_greedy_module

    cfg = load_config(ROOT / "configs" / "knee2d.yaml", args.overrides)
    measured: dict[str, Any] = {}

    def measure(stage: P.PipelineStage) -> None:
        """After training, before the process group closes: this stage's memory."""
        device = stage.device
        optimizers = stage.trainer.optimizers
        measured["run_peak_mib"] = torch.cuda.max_memory_allocated(device) / _MIB if device.type == "cuda" else None
        params = list(stage.net.parameters())  # everything the stage built, owned or not
        measured["params_optimizer_mib"] = (_bytes(params) + _bytes(_optimizer_tensors(optimizers))) / _MIB
        # One module step of this stage on one training batch (no communication inside it).
        batch = stage.example_batch()
        A = stage.net.sense(batch.maps, batch.mask)
        x0 = A.H(batch.kspace)
        m = stage.layout.modules[0]
        unrolls = stage.module_ranges[m]
        measured["module_step"] = measure_step_memory(
            lambda: train_greedy_module(stage.net, unrolls, x0, A, batch.kspace, batch.target, stage.loss_fn,
                                        optimizers[0]),
            [stage.net.unrolls[i] for i in unrolls], [optimizers[0]], [batch.kspace, batch.maps, x0], device)

    result = P.train_pipeline(cfg, enable_progress_bar=False, after=measure)
    stage_holder = measured
    row = {"rank": result.rank, "stage": result.stage, "steps": result.steps, "train_seconds": result.train_seconds,
           "step_seconds": result.step_seconds, "threads": torch.get_num_threads(),
           "params_optimizer_mib": stage_holder["params_optimizer_mib"],
           "module_step_peak_mib": stage_holder["module_step"]["peak_mib"],
           "module_step_activations_mib": stage_holder["module_step"]["peak_step_mib"],
           "run_peak_mib": stage_holder["run_peak_mib"]}
    common.write_json(Path(args.worker) / f"rank{result.rank}.json", row)


# ------------------------------------------------------------------------------------------ driver
def make_data(root: Path, args: argparse.Namespace) -> Path:
    from mrirecon.data.coil_maps import embed_maps
    from mrirecon.synthetic.generator import generate

    if not (root / "train").is_dir():  # our own generated files: they may carry their maps
        generate("knee2d", root, seed=0, volumes=args.volumes, coils=8, slices=args.slices, size=tuple(args.size))
        embed_maps(root, kind="knee2d", calib_width=12)
    return root


def launch(stages: int, threads: int, data: Path, work: Path, args: argparse.Namespace, repeat: int = 0) -> dict[str, Any]:
    out = work / f"k{stages}_t{threads}_r{repeat}"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(stages),
           str(Path(__file__).resolve()), "--worker", str(out), "--", *bench_overrides(data, out / "runs", args),
           f"train.pipeline.threads={threads}"]
    print(f"[pipeline bench] K={stages}, {threads} thread(s) per stage ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"launch K={stages} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(stages)]
    r0 = next(r for r in ranks if r["rank"] == 0)
    return {"stages": stages, "threads_per_stage": threads, "cores_used": stages * threads,
            "steps": r0["steps"], "seconds": r0["train_seconds"],
            "batches_per_s": r0["steps"] / r0["train_seconds"], "per_stage": sorted(ranks, key=lambda r: r["stage"])}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput of a setting's repeats, with every repeat's throughput kept."""
    ordered = sorted(runs, key=lambda r: r["batches_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["batches_per_s_repeats"] = [r["batches_per_s"] for r in runs]
    return row


def verdicts(rows: list[dict], device: str) -> dict[str, Any]:
    by = {(r["stages"], r["threads_per_stage"]): r for r in rows}
    out: dict[str, Any] = {}
    base = by.get((1, 1))
    if base:
        full = base["per_stage"][0]["params_optimizer_mib"]
        for r in rows:
            k = r["stages"]
            allowed = [full / k + s["module_step_activations_mib"] for s in r["per_stage"]]
            measured = [s["run_peak_mib"] if s["run_peak_mib"] is not None else
                        s["params_optimizer_mib"] + s["module_step_activations_mib"] for s in r["per_stage"]]
            r["memory_goal_mib"], r["memory_measured_mib"] = allowed, measured
            r["memory_goal_met"] = all(m <= a * 1.0001 for m, a in zip(measured, allowed))
            r["speedup_vs_k1_same_threads"] = r["batches_per_s"] / by.get((1, r["threads_per_stage"]), base)["batches_per_s"]
    if device == "cpu" and (2, 1) in by and (1, 1) in by:
        out["speedup_k2_equal_threads"] = by[(2, 1)]["batches_per_s"] / by[(1, 1)]["batches_per_s"]
        out["speedup_k2_equal_threads_goal_met"] = out["speedup_k2_equal_threads"] >= 1.8
        if (1, 2) in by:
            out["gain_k2_vs_k1_all_cores"] = by[(2, 1)]["batches_per_s"] / by[(1, 2)]["batches_per_s"]
    return out


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = ["# Pipeline-parallel GLEAM: throughput and per-stage memory", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Machine: {meta['machine']}", "",
             f"Network: {result['settings']['unrolls']} PGD unrolls (resnet prox, {result['settings']['channels']} "
             f"channels), GLEAM with one unroll per module; data: synthetic knee2d "
             f"{result['settings']['size'][0]}x{result['settings']['size'][1]}, 8 coils, batch 1, "
             f"{result['settings']['workers']} DataLoader worker(s) per stage; "
             f"{result['settings']['epochs']} epochs of {result['rows'][0]['steps'] // result['settings']['epochs']} batches.", "",
             f"Throughput: the median of {result['settings']['repeats']} launches per setting (all in the last column).", "",
             "| stages K | threads / stage | cores | batches/s | speedup vs K=1 (same threads) | per-stage params+Adam (MiB) | per-stage peak (MiB) | memory goal (MiB) | met | batches/s of each launch |",
             "|---:|---:|---:|---:|---:|---|---|---|---|---|"]
    for r in result["rows"]:
        fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
        lines.append(f"| {r['stages']} | {r['threads_per_stage']} | {r['cores_used']} | {r['batches_per_s']:.3f} | "
                     f"{r.get('speedup_vs_k1_same_threads', float('nan')):.2f} | "
                     f"{fmt(s['params_optimizer_mib'] for s in r['per_stage'])} | {fmt(r.get('memory_measured_mib', []))} | "
                     f"{fmt(r.get('memory_goal_mib', []))} | {'yes' if r.get('memory_goal_met') else 'no'} | "
                     f"{fmt(r.get('batches_per_s_repeats', []))} |")
    v = result["verdicts"]
    lines += [""]
    if "speedup_k2_equal_threads" in v:
        lines.append(f"- K=2 vs K=1 at 1 thread per stage: **{v['speedup_k2_equal_threads']:.2f}x** (goal >= 1.8x: "
                     f"{'met' if v['speedup_k2_equal_threads_goal_met'] else 'MISSED'})")
    if "gain_k2_vs_k1_all_cores" in v:
        lines.append(f"- K=2 (1 thread each) vs K=1 with the same 2 cores as threads: **{v['gain_k2_vs_k1_all_cores']:.2f}x**")
    lines.append("- per-stage peak on CPU = parameters + Adam state of the stage + the peak of one module step "
                 "(exact tensor accounting); on GPU the stage's torch.cuda.max_memory_allocated over the run.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/pipeline")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2], help="K values (GPU: one GPU per stage)")
    p.add_argument("--unrolls", type=int, default=8)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--size", type=int, nargs=2, default=[64, 64])
    p.add_argument("--volumes", type=int, default=4)
    p.add_argument("--slices", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per stage (data.num_workers)")
    p.add_argument("--repeats", type=int, default=3, help="launches per setting; the median throughput is reported")
    p.add_argument("--data", default=None, help="synthetic data folder (made when missing; default: a temp folder)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(args.data) if args.data else Path(tmp) / "knee2d", args)
        settings = ([(k, 1) for k in args.stages] + [(1, max(args.stages))]) if args.device == "cpu" \
            else [(k, 1) for k in args.stages]
        settings = list(dict.fromkeys(settings))
        # Repeats go round the settings (1, 2, 3, 1, 2, 3, ...) so a drift in the machine's speed hits all alike.
        runs = [[launch(k, t, data, Path(tmp) / "work", args, r) for k, t in settings] for r in range(args.repeats)]
        rows = [median_run([rep[i] for rep in runs]) for i in range(len(settings))]
    result = {"meta": {"command": common.command_line(argv, __file__), "date": common.now_utc(),
                       "machine": common.machine_info(args.device)},
              "settings": {"unrolls": args.unrolls, "channels": args.channels, "size": args.size, "workers": args.workers,
                           "repeats": args.repeats,
                           "epochs": args.epochs, "volumes": args.volumes, "slices": args.slices},
              "rows": rows}
    result["verdicts"] = verdicts(rows, args.device)
    out = Path(args.out)
    common.write_json(out / "pipeline.json", result)
    common.write_markdown(out / "pipeline.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
