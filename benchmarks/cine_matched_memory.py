"""GLEAM's cine claim, measured: the matched-memory experiment on synthetic 2D+t cardiac cine.

    python benchmarks/cine_matched_memory.py --out results/cine [--work outputs/cine] [--quick] [key.sub=value ...]

GLEAM (Ozturkler et al. 2022) reports, for cardiac cine with 3D convolutions, +3.3 dB PSNR and +0.025 SSIM
over end-to-end training at equal memory. The configs in configs/cine_matched_memory/ train the same
unrolled PGD network (3D-convolution resnet prox over (t, y, x)):
  e2e         N unrolls end to end (the activation-memory budget);
  gleam       3N unrolls in 3 greedy modules of N (one module has the memory of e2e);
  checkpoint  3N unrolls end to end with gradient checkpointing per unroll;
  invertible  3N unrolls end to end by MEL (spectrally normalised prox, bounded step);
and the classical cine baselines on the same test split: zero-filled, CG-SENSE frame by frame and L1
compressed sensing with temporal (x-f) sparsity (mrirecon/evaluation/cine.py).

Per network, as benchmarks/matched_memory.py does (its helpers are reused): the peak memory of one training
step on the first training batch after a warm-up step, training by mrirecon.training.run.train, and the best
checkpoint (validation PSNR) evaluated on the test split by mrirecon.evaluation.runner.evaluate (fastMRI
PSNR/SSIM/NMSE, plus the CMRxRecon challenge's per-image convention; figures: x-t profile, error maps and a
GIF of the first test volume). Goal (issue 12): GLEAM PSNR >= e2e PSNR + 2 dB at matched memory (premise:
GLEAM's peak memory <= 1.1x e2e's). OUT/results.json and OUT/results.md are written atomically after every
run, the figures copied to OUT/figures/; run folders and evaluations go to WORK (--work, default
outputs/<name of OUT>, git-ignored). --quick: tiny data and 1 epoch, to check the pipeline in a minute or two.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` and `benchmarks` importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import matched_memory as mm  # noqa: E402
from mrirecon.config import Config, ConfigError, load_config  # noqa: E402

CONFIG_DIR = ROOT / "configs" / "cine_matched_memory"
STRATEGIES = ("e2e", "gleam", "checkpoint", "invertible")
# 10 / 2 / 2 volumes of 2 slices; 8 frames of 32 x 32, 4 coils: the whole experiment in ~11-15 min on one core.
DATA = dict(volumes=14, coils=4, slices=2, frames=8, size=(32, 32))
QUICK_DATA = dict(volumes=3, coils=4, slices=1, frames=4, size=(32, 32))
QUICK_OVERRIDES = ("train.max_epochs=1", "train.log_every_n_steps=1")
CALIB_WIDTH = 12
BASELINES = {"zero_filled": "zero-filled", "sense_per_frame": "CG-SENSE per frame",
             "cs_temporal": "L1 CS, temporal (x-f) sparsity"}
GOAL_GAIN, GOAL_MEMORY = 2.0, 1.1
CHALLENGE = ("challenge_psnr", "challenge_ssim", "challenge_nmse")

log = mm.log


def load_configs(overrides: Sequence[str]) -> dict[str, Config]:
    """The four configs, validated; they must agree on data and training schedule."""
    configs = {s: load_config(CONFIG_DIR / f"{s}.yaml", list(overrides)) for s in STRATEGIES}
    ref = configs["e2e"]
    for s, cfg in configs.items():
        if cfg.train.strategy != s:
            raise ConfigError(f"{CONFIG_DIR / f'{s}.yaml'}: train.strategy is {cfg.train.strategy!r}, not {s!r}")
        for key in ("data", "train.lr", "train.max_epochs", "train.loss", "train.seed"):
            a, b = (ref, cfg)
            for part in key.split("."):
                a, b = getattr(a, part), getattr(b, part)
            if a != b:
                raise ConfigError(f"{CONFIG_DIR / f'{s}.yaml'}: {key} differs from e2e.yaml's")
    return configs


def prepare_data(cfg: Config, quick: bool) -> Path:
    """Generate the synthetic cine set under data.root if it is missing, then cache ESPIRiT maps."""
    from mrirecon.data.coil_maps import cache_maps
    from mrirecon.synthetic.generator import generate

    root = Path(cfg.data.root)
    if not mm.dataset_ready(root):
        settings = QUICK_DATA if quick else DATA
        log(f"[cine] generating synthetic data in {root} {settings}")
        generate("cine", root, seed=0, **settings)
    cache_maps(root, kind="cine", calib_width=CALIB_WIDTH, workers=1, verbose=False)
    return root


def challenge_scores(eval_dir: Path) -> dict[str, float]:
    """Mean over test volumes of the CMRxRecon-convention scores the evaluation runner wrote."""
    with open(eval_dir / "per_volume.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(np.mean([float(r[k]) for r in rows])) for k in CHALLENGE if rows and k in rows[0]}


def run_network(strategy: str, cfg: Config, out: Path, work: Path, device: torch.device,
                progress: bool) -> dict[str, Any]:
    from mrirecon.evaluation.runner import evaluate
    from mrirecon.training.module import load_module
    from mrirecon.training.run import train

    n, m = cfg.model.num_unrolls, cfg.train.num_modules
    log(f"[cine] {strategy}: {n} unrolls{f' in {m} modules' if strategy == 'gleam' else ''}; measuring memory")
    memory, parameters = mm.step_memory(cfg, device)
    common.release_memory(device)
    log(f"[cine] {strategy}: {parameters:,} parameters, peak memory {memory['peak_mib']:.1f} MiB; training")
    result = train(cfg, enable_progress_bar=progress)
    ckpt = result.best_checkpoint or result.last_checkpoint
    epochs = mm.epochs_trained(result.last_checkpoint or ckpt)
    module = load_module(ckpt)
    eval_dir = work / "eval" / strategy
    summary = evaluate(cfg, Path(cfg.data.root) / "test", eval_dir, module=module, device=device.type,
                       num_figures=1, progress=progress)
    del module
    common.release_memory(device)
    row = {"strategy": strategy, "method": "network", "config": common.display_path(CONFIG_DIR / f"{strategy}.yaml"),
           "num_unrolls": n, "num_modules": m, "parameters": parameters, "prox": dict(cfg.model.prox),
           "peak_memory_mib": memory["peak_mib"], "memory": memory, "train_seconds": result.train_seconds,
           "step_seconds": result.step_seconds, "epochs": epochs, **mm.metrics_of(summary),
           **challenge_scores(eval_dir), "best_val_psnr": result.best_score, **mm.training_log(result.run_dir),
           "checkpoint": common.display_path(ckpt), "figures": common.keep_figures(summary["figures"], out / "figures", strategy)}
    log(f"[cine] {strategy}: trained {result.train_seconds:.0f} s, test PSNR {row['psnr']:.2f} dB, "
        f"SSIM {row['ssim']:.4f}")
    return row


def run_baselines(cfg: Config) -> list[dict[str, Any]]:
    """The classical cine baselines on the test split, scored as the networks are."""
    from mrirecon.evaluation.baselines import reconstruct
    from mrirecon.evaluation.cine import challenge_metrics
    from mrirecon.evaluation.metrics import evaluate_volume, summarize
    from mrirecon.data.build import build_dataset
    from mrirecon.evaluation.volumes import VolumeAccumulator, magnitude

    ds = build_dataset(cfg, Path(cfg.data.root) / "test", progress=False)
    rows = []
    for method, name in BASELINES.items():
        acc, start = VolumeAccumulator(), time.perf_counter()
        for i in range(len(ds)):
            s = ds[i]
            x = torch.from_numpy(reconstruct(method, s.kspace.numpy(), s.maps.numpy(), s.mask.numpy(), 2))
            acc.add(s.fname, s.slice_num, s.nominal_acceleration, s.acceleration,
                    reconstruction=magnitude(x) * s.scale, target=magnitude(s.target) * s.scale)
        seconds = time.perf_counter() - start
        per_volume = []
        for vol in acc.volumes().values():
            t, r = vol.images["target"], vol.images["reconstruction"]
            per_volume.append({**evaluate_volume(t.reshape(-1, *t.shape[-2:]), r.reshape(-1, *r.shape[-2:]),
                                                 crop=False), **challenge_metrics(t, r)})
        summary = summarize(per_volume)
        row = {"strategy": method, "method": method, "name": name, "num_unrolls": None, "parameters": 0,
               "psnr": summary["psnr"]["mean"], "ssim": summary["ssim"]["mean"], "nmse": summary["nmse"]["mean"],
               **{k: float(np.mean([p[k] for p in per_volume])) for k in CHALLENGE},
               "seconds_per_slice": seconds / max(len(ds), 1)}
        log(f"[cine] {name}: test PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}")
        rows.append(row)
    return rows


def goals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["strategy"]: r for r in rows if r.get("error") is None}
    e2e, gleam = by.get("e2e", {}), by.get("gleam", {})
    gain = gleam["psnr"] - e2e["psnr"] if "psnr" in gleam and "psnr" in e2e else None
    mem = (gleam["peak_memory_mib"] / e2e["peak_memory_mib"]
           if gleam.get("peak_memory_mib") and e2e.get("peak_memory_mib") else None)
    return [{"description": "GLEAM PSNR - e2e PSNR at matched memory (dB)", "value": gain,
             "target": f">= {GOAL_GAIN}", "pass": None if gain is None else gain >= GOAL_GAIN},
            {"description": "premise: GLEAM peak memory / e2e peak memory", "value": mem,
             "target": f"<= {GOAL_MEMORY}", "pass": None if mem is None else mem <= GOAL_MEMORY}]


def markdown(result: dict[str, Any]) -> str:
    meta, f = result["meta"], mm._fmt
    machine = meta["machine"]
    where = machine["gpu"] or f"{machine['cpu']} ({machine['usable_cores']} cores, {machine['torch_threads']} threads)"
    lines = ["# Cardiac cine: GLEAM vs end-to-end at matched memory (issue 12)", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}; commit {meta['git_commit']}; device "
             f"{meta['device']}, {where}; torch {machine['torch']}; load average start / end "
             f"{meta['load_average_start']} / {meta.get('load_average_end')}; total {f(meta.get('wall_time_s'), 0)} s"
             + ("" if meta.get("complete") else " (incomplete)") + ".", "", meta["data"], "", meta["method"], "",
             "| method | unrolls | modules | parameters | peak memory (MiB) | memory / e2e | training (s) | epochs | "
             "PSNR (dB) | SSIM | NMSE | challenge PSNR | challenge SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    e2e_mem = next((r.get("peak_memory_mib") for r in result["rows"] if r["strategy"] == "e2e"), None)
    for r in result["rows"]:
        if r.get("error"):
            lines.append(f"| {r['strategy']} | failed: {r['error']} |" + " |" * 11)
            continue
        mem = r.get("peak_memory_mib")
        lines.append(f"| {r.get('name', r['strategy'])} | {f(r.get('num_unrolls'))} | {f(r.get('num_modules'))} | "
                     f"{f(r.get('parameters'))} | {f(mem, 1)} | {f(mem / e2e_mem if mem and e2e_mem else None)} | "
                     f"{f(r.get('train_seconds'), 1)} | {f(r.get('epochs'))} | {f(r.get('psnr'))} | "
                     f"{f(r.get('ssim'), 4)} | {f(r.get('nmse'), 4)} | {f(r.get('challenge_psnr'))} | "
                     f"{f(r.get('challenge_ssim'), 4)} |")
    curves = [f"{r['strategy']} " + ", ".join(f"{v:.2f}" for v in r["val_psnr_per_epoch"])
              for r in result["rows"] if r.get("val_psnr_per_epoch")]
    if curves:
        lines += ["", "Validation PSNR (dB) per epoch: " + "; ".join(curves) + "."]
    lines += ["", "| goal | measured | target | result |", "|---|---|---|---|"]
    for g in result["goals"]:
        verdict = "not measured" if g["pass"] is None else ("pass" if g["pass"] else "**fail**")
        lines.append(f"| {g['description']} | {f(g['value'])} | {g['target']} | {verdict} |")
    figures = [p for r in result["rows"] for p in r.get("figures", [])]
    if figures:
        lines += ["", "Figures (first test volume; x-t profiles, error maps and GIFs next to them): "
                  + ", ".join(f"`{p}`" for p in figures)]
    return "\n".join(lines) + "\n"


METHOD = ("Peak memory: one training step on the first training batch after a warm-up step, only that network "
          "alive (`mrirecon.training.memory.measure_step_memory`; CPU: exact tensor accounting). Metrics on the "
          "test split, mean over volumes: fastMRI PSNR/SSIM/NMSE (frames scored as slices, data range the "
          "volume's max) and the CMRxRecon convention (each 2D image normalised by its own max, mean over images; "
          "mrirecon/evaluation/cine.py). Best checkpoint by validation PSNR. Goal (issue 12): GLEAM >= e2e + 2 dB.")


def parser() -> argparse.ArgumentParser:
    return mm.experiment_parser(__doc__)


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    device, fixed = mm.run_settings(args)
    out, work = args.out, mm.work_dir(args)
    quick = [f"data.root={work / 'quick_data'}", *QUICK_OVERRIDES] if args.quick else []
    configs = load_configs([*fixed, *quick, *args.overrides])
    mm.quiet_lightning()
    start = time.perf_counter()
    ref = configs["e2e"]
    result: dict[str, Any] = {"meta": {
        "command": common.command_line(argv, __file__), "date": common.now_utc(), "git_commit": common.git_commit(),
        "device": device.type, "machine": common.machine_info(device), "quick": args.quick,
        "overrides": list(args.overrides), "load_average_start": common.load_average(), "method": METHOD,
        "data": "", "complete": False}, "rows": [], "goals": []}

    def save() -> None:
        result["meta"].update(wall_time_s=time.perf_counter() - start, load_average_end=common.load_average())
        result["goals"] = goals(result["rows"])
        clean = mm._finite(result)
        common.write_json(out / "results.json", clean)
        common.write_markdown(out / "results.md", markdown(clean))

    root = prepare_data(ref, args.quick)
    result["meta"]["data"] = mm.describe_data(ref, root, args.quick)
    failed = 0
    for strategy, cfg in configs.items():
        try:
            row = run_network(strategy, cfg, out, work, device, args.progress)
        except (RuntimeError, ValueError) as e:  # a failed run is reported; the others still run
            failed += 1
            log(f"[cine] {strategy}: FAILED: {e}")
            row = {"strategy": strategy, "method": "network", "error": str(e).splitlines()[0]}
        result["rows"].append(row)
        save()
    result["rows"].extend(run_baselines(ref))
    result["meta"]["complete"] = failed == 0
    save()
    mm.log_goals(result["goals"], lambda g: "cine")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return mm.cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
