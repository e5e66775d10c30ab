"""The main job, end to end on built-in synthetic data (what `make demo` runs):

  1. generate a synthetic dataset (fastMRI layout, 60 volumes) unless it is already there,
  2. compute and cache ESPIRiT coil maps (in the maps cache, never in the data files),
  3. train the unrolled network of configs/<kind>.yaml with GLEAM and the demo's schedule
     (`DEMO_DEFAULTS`: 2 greedy modules of 4 unrolls, half of end-to-end training's activation memory;
     `DEMO_SCHEDULE`: batch 1, Adam 3e-3 with cosine decay; override with e.g.
     `train.strategy=e2e train.num_modules=1`),
  4. evaluate it and the classical baselines (zero-filled, CG-SENSE, L1-wavelet CS; their settings chosen
     on the validation split) on the test split against fastMRI's `reconstruction_rss`,
  5. write a short report: metrics table, gains over the baselines and over the best of them, figure paths.

    python -m mrirecon.demo [--kind knee2d|brain2d|knee3d|cine] [--out outputs/demo] [key.sub=value ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .atomic import write_text
from .config import ConfigError, load_config
from .data.errors import DataError

REPO = Path(__file__).resolve().parent.parent
# The demo trains with GLEAM; overrides given on the command line come after these and win.
DEMO_DEFAULTS = ("train.strategy=gleam", "train.num_modules=2")
# The 2D demos' training schedule at their CPU budget (about 22 minutes of training on one slow core),
# chosen on the validation split (README, "Demo"; results/demo_v2/NOTES.md): many small steps, a high rate
# decayed to zero.
DEMO_SCHEDULE = {kind: ("data.batch_size=1", "train.lr=3e-3", "train.scheduler={name: cosine}", "train.max_epochs=24")
                 for kind in ("knee2d", "brain2d")}
DEMO_VOLUMES = 60  # 42 / 9 / 9 train / val / test volumes of 8 slices
# The demo's goal: the network beats the best classical baseline by this much PSNR on the test split.
GOAL_DB = 1.5


def demo_config(kind: str, out: Path, overrides: list[str]):
    """configs/<kind>.yaml with the demo's output folder, DEMO_DEFAULTS, the kind's DEMO_SCHEDULE, then the
    user's overrides."""
    return load_config(REPO / "configs" / f"{kind}.yaml",
                       [f"output_dir={out / 'runs'}", *DEMO_DEFAULTS, *DEMO_SCHEDULE.get(kind, ()), *overrides])


def _dataset_ready(root: Path) -> bool:
    return all(any((root / s).glob("*.h5")) for s in ("train", "val", "test"))


def _outdated_synthetic(root: Path) -> bool:
    """True when `root` holds synthetic files of an older generator (written by an earlier `make demo`):
    the demo then writes its data afresh. Files that are not synthetic are never touched."""
    import h5py

    from .synthetic import GENERATOR_VERSION

    for path in sorted(root.glob("*/*.h5")):
        with h5py.File(path, "r") as f:
            if not str(f.attrs.get("patient_id", "")).startswith("synthetic-"):
                return False
            if int(f.attrs.get("generator_version", 1)) < GENERATOR_VERSION:
                return True
    return False


def _table(results: dict[str, dict]) -> str:
    lines = ["| method | PSNR (dB) | SSIM | NMSE | s/slice |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f} | "
                     f"{r['ssim']['mean']:.4f} ± {r['ssim']['std']:.4f} | {r['nmse']['mean']:.4f} | "
                     f"{r['seconds_per_slice']:.3f} |")
    return "\n".join(lines)


def run(kind: str, out: Path, overrides: list[str], volumes: int, seed: int, generate_args: dict | None = None,
        progress: bool = True) -> Path:
    from .data.coil_maps import cache_maps
    from .synthetic import generate
    from .evaluation.runner import evaluate
    from .training.module import load_module
    from .training.run import train

    cfg = demo_config(kind, out, overrides)
    root = Path(cfg.data.root)
    t0 = time.perf_counter()
    if not _dataset_ready(root) or _outdated_synthetic(root):
        print(f"[1/5] generating synthetic {kind} data in {root} ({volumes} volumes)", flush=True)
        generate(kind, root, volumes=volumes, seed=seed, overwrite=_dataset_ready(root), **(generate_args or {}))
    else:
        found = len(list(root.glob("*/*.h5")))
        print(f"[1/5] using existing data in {root} ({found} volumes"
              + (f"; --volumes {volumes} applies only to data it writes: `make clean-data` to start afresh)"
                 if found != volumes else ")"), flush=True)
    print("[2/5] ESPIRiT coil maps (in the maps cache)", flush=True)
    cache_maps(root, kind=kind, workers=2, verbose=False)
    print(f"[3/5] training {cfg.model.num_unrolls}-unroll {cfg.model.dc} network, strategy {cfg.train.strategy}",
          flush=True)
    result = train(cfg, enable_progress_bar=progress)
    ckpt = result.best_checkpoint or result.last_checkpoint
    print(f"      run directory {result.run_dir}; checkpoint {ckpt}", flush=True)
    print("[4/5] evaluating on the test split", flush=True)
    results: dict[str, dict] = {}
    module = load_module(ckpt)
    results["unrolled network"] = evaluate(cfg, root / "test", out / "eval" / "network", module=module)
    for method, label in (("zero_filled", "zero-filled"), ("sense", "CG-SENSE"), ("cs", "L1-wavelet CS")):
        results[label] = evaluate(cfg, root / "test", out / "eval" / method, method=method, num_figures=0)
    net = results["unrolled network"]
    gains = {b: {"psnr_db": net["psnr"]["mean"] - results[b]["psnr"]["mean"],
                 "ssim": net["ssim"]["mean"] - results[b]["ssim"]["mean"]} for b in results if b != "unrolled network"}
    best = max((b for b in gains if b != "zero-filled"), key=lambda b: results[b]["psnr"]["mean"])
    goal = {"best_baseline": best, "psnr_gain_db": gains[best]["psnr_db"], "target_db": GOAL_DB,
            "met": gains[best]["psnr_db"] >= GOAL_DB}
    report = out / "REPORT.md"
    print("[5/5] writing", report, flush=True)
    lines = [
        f"# mrirecon demo: {kind}",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {platform.node()} "
        f"({platform.processor() or platform.machine()}), total {time.perf_counter() - t0:.0f} s "
        f"(training {result.train_seconds:.0f} s).",
        "",
        f"Command: `python -m mrirecon.demo --kind {kind}"
        + (f" --volumes {volumes}" if volumes != DEMO_VOLUMES else "") + f" {' '.join(overrides)}".rstrip() + "`",
        "",
        f"Network: {cfg.model.num_unrolls} unrolls ({cfg.model.dc}), prox {cfg.model.prox}, strategy "
        f"{cfg.train.strategy}" + (f" ({cfg.train.num_modules} modules)" if cfg.train.strategy == "gleam" else "")
        + f", {module.net.num_parameters():,} parameters, {cfg.train.max_epochs} epochs.",
        f"Data: {root} (test split), mask {cfg.data.mask}.",
        "",
        "Metrics on the test split (fastMRI definitions; mean ± std over volumes):",
        "",
        _table(results),
        "",
        "Gain of the unrolled network: " + "; ".join(
            f"{g['psnr_db']:+.2f} dB PSNR, {g['ssim']:+.4f} SSIM over {b}" for b, g in gains.items()) + ".",
        f"Goal (>= {GOAL_DB} dB PSNR over the best classical baseline, {best}): {goal['psnr_gain_db']:+.2f} dB, "
        + ("met." if goal["met"] else "not met."),
        "Baseline settings (chosen on the validation split): " + "; ".join(
            f"{b} {results[b].get('baseline_params')}" for b in results if results[b].get("baseline_params")) + ".",
        f"Threads: torch {torch_threads()}; the network's numbers reproduce exactly on the same machine with the "
        "same thread count (the thread count changes the order of floating-point sums in training).",
        "",
        "Figures: " + ", ".join(net["figures"]),
        "",
        f"Checkpoint: {ckpt}",
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_text(report, "\n".join(lines) + "\n")
    write_text(out / "summary.json", json.dumps({"results": results, "gains": gains, "goal": goal, "checkpoint": ckpt,
                                                 "threads": torch_threads()}, indent=1,
                                                default=str))
    print("\n".join(lines))
    return report


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="knee2d", choices=("knee2d", "brain2d", "knee3d", "cine"))
    p.add_argument("--out", default="outputs/demo", help="folder for runs, predictions, figures and the report")
    p.add_argument("--volumes", type=int, default=DEMO_VOLUMES, help="synthetic volumes to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs=5")
    a = p.parse_args(argv)
    try:
        run(a.kind, Path(a.out), a.overrides, a.volumes, a.seed, progress=not a.no_progress)
    except (ConfigError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
