"""The matched-memory experiment: GLEAM against end-to-end, checkpointed and invertible training.

    python benchmarks/matched_memory.py --out results/matched_memory [--work outputs/matched_memory] [--quick]
        [--only KIND] [--volumes V] [--device auto|cpu|cuda] [key.sub=value ...]

GLEAM (Ozturkler et al. 2022) trains 3N unrolls in 3 greedy modules of N within the activation memory of
an N-unroll network trained end to end (their brain setup: 24 unrolls in 3 modules vs 8 unrolls). For
each data kind with configs in configs/matched_memory/ (KIND_e2e, KIND_gleam, KIND_checkpoint,
KIND_invertible .yaml) this script
  1. generates the synthetic data set if data.root has none (mrirecon.synthetic) and caches the
     ESPIRiT maps (mrirecon.data.coil_maps; files that have maps are skipped),
  2. per config, before training: the peak memory of one training step on the first real training
     batch, after a warm-up step so that Adam's state exists, with only that network alive
     (mrirecon.training.memory.measure_step_memory: torch.cuda.max_memory_allocated on a GPU, the exact
     tensor accounting on CPU), measured the same way for every strategy,
  3. trains it with mrirecon.training.run.train: wall-clock training time from its RunResult (validation
     included, identical validation work for every run of a kind apart from the network's depth) and the
     time of the training steps alone (forward, backward, optimizer steps; no loading or validation),
  4. evaluates the best checkpoint (by validation PSNR) on the test split with
     mrirecon.evaluation.runner.evaluate (fastMRI PSNR/SSIM/NMSE), and the zero-filled and CG-SENSE
     baselines on the same split,
  5. writes OUT/results.json (meta, rows, goals) and OUT/results.md (tables, goals with measured value
     and pass/fail) atomically, after every run, so an interrupted experiment keeps what it measured;
     the first test volume's figure of each network is copied to OUT/figures/. The run folders and the
     evaluations (predictions, per-volume CSVs) go to WORK (--work, default outputs/<name of OUT>,
     git-ignored): the report summarises them (per-epoch validation PSNR and losses in results.json).

Goals (the GLEAM paper's claims, as set in the issue), per kind:
  - GLEAM PSNR >= e2e PSNR + 1 dB (at matched memory);
  - GLEAM within 0.3 dB of checkpointing: checkpoint PSNR - GLEAM PSNR <= 0.3 dB (GLEAM may be better);
  - GLEAM training >= 1.25x faster than checkpointing: checkpoint time / GLEAM time >= 1.25, judged
    both on the wall clock and on the training steps alone;
  - and the premise, not a claim: GLEAM's peak memory <= 1.1x that of e2e.

--quick: tiny data under WORK/quick_data/KIND (a few 32x32 slices, 4 coils) and 1 epoch, for checking
the pipeline in a minute. Key=value overrides apply to every run (after --quick's), e.g.
`train.max_epochs=50` on a GPU; --volumes sets the size of a generated data set. The configs themselves
stay the same on a GPU: only data size and epochs change.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` and `benchmarks` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from mrirecon.config import Config, ConfigError, load_config  # noqa: E402
from mrirecon.data.errors import DataError  # noqa: E402

SCHEMA_VERSION = 1
CONFIG_DIR = ROOT / "configs" / "matched_memory"
STRATEGIES = ("e2e", "gleam", "checkpoint", "invertible")  # the order of runs and table rows
BASELINES = {"zero_filled": "zero-filled", "sense": "CG-SENSE"}
ROW_KEYS = ("kind", "strategy", "method", "num_unrolls", "num_modules", "parameters", "peak_memory_mib",
            "train_seconds", "step_seconds", "epochs", "psnr", "ssim", "nmse")
# --quick data: a few slices, 4 coils (the tests' tiny sizes but for knee3d); ESPIRiT calibration fits inside.
QUICK_DATA = {
    "knee2d": dict(volumes=3, coils=4, slices=2, size=(32, 32)),
    "brain2d": dict(volumes=3, coils=4, slices=2, size=(32, 32)),
    "knee3d": dict(volumes=3, coils=4, size=(4, 64, 48)),  # full ky-kz: room for the 8x mask beside its calibration
    "cine": dict(volumes=3, coils=4, slices=1, frames=6, size=(32, 32)),
}
QUICK_CALIB_WIDTH = 12
QUICK_OVERRIDES = ("train.max_epochs=1", "train.log_every_n_steps=1")
# Targets of the goals (see `goals`).
GOAL_PSNR_GAIN, GOAL_PSNR_GAP, GOAL_SPEEDUP, GOAL_MEMORY = 1.0, 0.3, 1.25, 1.1


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------------ configs
def available_kinds() -> list[str]:
    """Kinds with an e2e config in configs/matched_memory/, in a stable order (knee2d first)."""
    kinds = sorted(p.name[: -len("_e2e.yaml")] for p in CONFIG_DIR.glob("*_e2e.yaml"))
    return sorted(kinds, key=lambda k: k != "knee2d")


def config_path(kind: str, strategy: str) -> Path:
    return CONFIG_DIR / f"{kind}_{strategy}.yaml"


def load_experiment(kind: str, overrides: Sequence[str]) -> dict[str, Config]:
    """The four configs of a kind, validated before anything runs; they must agree on data and training."""
    configs = {}
    for strategy in STRATEGIES:
        path = config_path(kind, strategy)
        cfg = load_config(path, list(overrides))
        if cfg.train.strategy != strategy:
            raise ConfigError(f"{common.display_path(path)}: train.strategy is {cfg.train.strategy!r}, "
                              f"the file name says {strategy!r}")
        configs[strategy] = cfg
    ref = configs["e2e"]
    for strategy, cfg in configs.items():
        for section, keys in (("data", None), ("train", ("loss", "lr", "weight_decay", "scheduler", "max_epochs",
                                                          "max_steps", "limit_train_batches", "seed"))):
            a, b = getattr(ref, section).__dict__, getattr(cfg, section).__dict__
            differ = [k for k in (keys or a) if a[k] != b[k]]
            if differ:
                raise ConfigError(f"{common.display_path(config_path(kind, strategy))}: {section}."
                                  f"{differ[0]} = {b[differ[0]]!r} differs from the e2e config's {a[differ[0]]!r}; "
                                  "the runs of a kind must see the same data and training schedule")
    return configs


# ------------------------------------------------------------------------------------------------ data
def dataset_ready(root: Path) -> bool:
    """Every split folder holds at least one .h5 file."""
    return all(any((root / split).glob("*.h5")) for split in ("train", "val", "test"))


def prepare_data(cfg: Config, quick: bool, volumes: int | None) -> Path:
    """Generate the synthetic set under data.root if it is missing, then cache ESPIRiT maps."""
    from mrirecon.data.coil_maps import cache_maps
    from mrirecon.synthetic.generator import generate

    root, kind = Path(cfg.data.root), cfg.data.kind
    if not dataset_ready(root):
        settings = dict(QUICK_DATA[kind]) if quick else {}
        if volumes is not None:
            settings["volumes"] = volumes
        log(f"[{kind}] generating synthetic data in {root} {settings or '(defaults)'}")
        generate(kind, root, seed=0, **settings)
    else:
        log(f"[{kind}] using the data in {root}")
    start = time.perf_counter()
    cache_maps(root, kind=kind, workers=1 if quick else 2, verbose=False,
               **({"calib_width": QUICK_CALIB_WIDTH} if quick else {}))
    log(f"[{kind}] ESPIRiT maps ready ({time.perf_counter() - start:.0f} s)")
    return root


# ------------------------------------------------------------------------------------------------ measuring
def step_memory(cfg: Config, device: torch.device) -> tuple[dict[str, float], int]:
    """Peak memory (MiB, measure_step_memory's keys) of one training step on the first training batch,
    after a warm-up step; and the network's parameter count. Only this network is alive meanwhile."""
    from mrirecon.data.datamodule import ReconDataModule
    from mrirecon.training.memory import measure_step_memory
    from mrirecon.training.module import ReconModule

    data = ReconDataModule(cfg)
    data.setup("fit")
    batch = data.batch_transform(next(iter(data.train_dataloader())))  # the loader hands over LoadedSample
    torch.manual_seed(cfg.train.seed)
    module = ReconModule(cfg.to_dict()).to(device)
    optimizers = module.configure_optimizers()
    if isinstance(optimizers, tuple):  # (optimizers, schedulers)
        optimizers = optimizers[0]
    inputs = [t.to(device) for t in (batch.kspace, batch.maps, batch.mask, batch.target)]

    def step() -> None:
        module.strategy.step(module.net, *inputs, module.loss_fn, optimizers)

    step()  # warm-up: Adam's state (and the spectral norms' power vectors) exist from here on
    common.release_memory(device)
    memory = measure_step_memory(step, [module.net], optimizers, inputs, device)
    return memory, module.net.num_parameters()  # the caller frees the device once this frame is gone


def training_log(run_dir: Path) -> dict[str, Any]:
    """From the run's CSV log: mean training loss and validation PSNR per epoch, the last epoch's validation
    PSNR after each GLEAM module (anytime reconstruction), the worst logged MEL inversion error."""
    path = run_dir / "metrics.csv"
    loss: dict[int, list[float]] = {}
    psnr: dict[int, float] = {}
    modules: dict[str, float] = {}
    inversion: list[float] = []
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                epoch = int(row["epoch"])
                if row.get("train/loss"):
                    loss.setdefault(epoch, []).append(float(row["train/loss"]))
                if row.get("val/psnr"):
                    psnr[epoch] = float(row["val/psnr"])
                    modules = {k.split("_")[-1]: float(v) for k, v in row.items()
                               if k.startswith("val/psnr_module") and v}
                if row.get("train/inversion_error"):
                    inversion.append(float(row["train/inversion_error"]))
    return {"train_loss_per_epoch": [sum(v) / len(v) for _, v in sorted(loss.items())],
            "val_psnr_per_epoch": [v for _, v in sorted(psnr.items())],
            "val_psnr_per_module": modules or None,
            "max_inversion_error": max(inversion) if inversion else None}


def epochs_trained(checkpoint: str) -> int:
    """Epochs completed, from a checkpoint written at the end of an epoch (Lightning counts from 0)."""
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1


def metrics_of(summary: dict[str, Any]) -> dict[str, float]:
    return {"psnr": summary["psnr"]["mean"], "psnr_std": summary["psnr"]["std"],
            "ssim": summary["ssim"]["mean"], "ssim_std": summary["ssim"]["std"],
            "nmse": summary["nmse"]["mean"], "test_volumes": summary["num_volumes"],
            "test_slices": summary["num_slices"]}


def run_network(kind: str, strategy: str, cfg: Config, out: Path, work: Path, device: torch.device, index: str,
                progress: bool) -> dict[str, Any]:
    """Memory, training and test metrics of one config: one row."""
    from mrirecon.evaluation.runner import evaluate
    from mrirecon.training.module import load_module
    from mrirecon.training.run import train

    n, m = cfg.model.num_unrolls, cfg.train.num_modules
    shape = f"{n} unrolls" + (f" in {m} modules" if strategy == "gleam" else "")
    log(f"[{kind} {index}] {strategy}: {shape}; measuring one training step's peak memory")
    memory, parameters = step_memory(cfg, device)
    common.release_memory(device)
    log(f"[{kind} {index}] {strategy}: {parameters:,} parameters, peak memory {memory['peak_mib']:.1f} MiB; "
        f"training {cfg.train.max_epochs} epochs")
    result = train(cfg, enable_progress_bar=progress)
    ckpt = result.best_checkpoint or result.last_checkpoint
    epochs = epochs_trained(result.last_checkpoint or ckpt)
    log(f"[{kind} {index}] {strategy}: trained in {result.train_seconds:.0f} s "
        f"({result.train_seconds / max(epochs, 1):.1f} s/epoch, steps alone {result.step_seconds:.0f} s); evaluating {Path(ckpt).name} on the test split")
    common.release_memory(device)
    module = load_module(ckpt)
    summary = evaluate(cfg, Path(cfg.data.root) / "test", work / "eval" / kind / strategy, module=module,
                       device=device.type, num_figures=1)
    del module
    common.release_memory(device)
    row = {
        "kind": kind, "strategy": strategy, "method": "network",
        "config": common.display_path(config_path(kind, strategy)),
        "num_unrolls": n, "num_modules": m, "parameters": parameters,
        "prox": dict(cfg.model.prox), "dc": cfg.model.dc,
        "peak_memory_mib": memory["peak_mib"], "memory": memory,
        "train_seconds": result.train_seconds, "step_seconds": result.step_seconds, "epochs": epochs,
        "seconds_per_epoch": result.train_seconds / max(epochs, 1),
        **metrics_of(summary),
        "best_val_psnr": result.best_score, **training_log(result.run_dir), "checkpoint": common.display_path(ckpt),
        "eval_seconds_per_slice": summary["seconds_per_slice"],
        "figures": common.keep_figures(summary["figures"], out / "figures", strategy),
    }
    log(f"[{kind} {index}] {strategy}: test PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}")
    return row


def run_baseline(kind: str, method: str, cfg: Config, work: Path) -> dict[str, Any]:
    from mrirecon.evaluation.runner import evaluate

    summary = evaluate(cfg, Path(cfg.data.root) / "test", work / "eval" / kind / method, method=method,
                       num_figures=0)
    row = {"kind": kind, "strategy": method, "method": method, "num_unrolls": None, "num_modules": None,
           "parameters": 0, "peak_memory_mib": None, "train_seconds": None, "step_seconds": None, "epochs": None,
           **metrics_of(summary), "eval_seconds_per_slice": summary["seconds_per_slice"]}
    log(f"[{kind}] {BASELINES[method]}: test PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}")
    return row


# ------------------------------------------------------------------------------------------------ goals
def goals(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The experiment's goals per kind, from the rows: measured value, target, pass (None: not measured)."""
    out = []
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for kind in kinds:
        by = {r["strategy"]: r for r in rows if r["kind"] == kind and r.get("error") is None}

        def value(key: str, *strategies: str) -> list[float] | None:
            vals = [by[s].get(key) if s in by else None for s in strategies]
            return None if any(v is None for v in vals) else vals

        def add(goal: str, description: str, vals: list[float] | None, fn, op: str, target: float) -> None:
            v = None if vals is None else fn(*vals)
            ok = None if v is None else (v >= target if op == ">=" else v <= target)
            out.append({"kind": kind, "goal": goal, "description": description, "value": v,
                        "target": f"{op} {target:g}", "target_value": target, "pass": ok})

        add("psnr_gain_over_e2e_db", "GLEAM PSNR - e2e PSNR (dB) at matched memory",
            value("psnr", "gleam", "e2e"), lambda g, e: g - e, ">=", GOAL_PSNR_GAIN)
        add("psnr_gap_to_checkpoint_db", "checkpoint PSNR - GLEAM PSNR (dB): GLEAM within 0.3 dB of checkpointing",
            value("psnr", "checkpoint", "gleam"), lambda c, g: c - g, "<=", GOAL_PSNR_GAP)
        add("speedup_over_checkpoint", "checkpoint training time / GLEAM training time",
            value("train_seconds", "checkpoint", "gleam"), lambda c, g: c / g, ">=", GOAL_SPEEDUP)
        add("step_speedup_over_checkpoint", "checkpoint / GLEAM time in training steps alone (no validation, "
            "loading, checkpoints)", value("step_seconds", "checkpoint", "gleam"), lambda c, g: c / g, ">=",
            GOAL_SPEEDUP)
        add("memory_ratio_to_e2e", "premise: GLEAM peak memory / e2e peak memory (matched memory)",
            value("peak_memory_mib", "gleam", "e2e"), lambda g, e: g / e, "<=", GOAL_MEMORY)
    return out


# ------------------------------------------------------------------------------------------------ reports
def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: a diverged run's metrics become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    machine = meta["machine"]
    where = machine["gpu"] or f"{machine['cpu']} ({machine['usable_cores']} cores, {machine['torch_threads']} threads)"
    lines = [
        "# Matched-memory experiment: GLEAM vs end-to-end, checkpointed and invertible training",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; device: {meta['device']}, {where}; torch {machine['torch']}; "
        f"load average at start / end: {meta['load_average_start']} / {meta.get('load_average_end')}; "
        f"total {_fmt(meta.get('wall_time_s'), 0)} s"
        + ("" if meta.get("complete") else " (incomplete: runs still going, interrupted or failed)") + ".",
        "",
        meta["method"],
        "",
    ]
    for kind in dict.fromkeys(r["kind"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["kind"] == kind]
        by = {r["strategy"]: r for r in rows}
        e2e_mem = (by.get("e2e") or {}).get("peak_memory_mib")
        gleam_t = (by.get("gleam") or {}).get("train_seconds")
        gleam_psnr = (by.get("gleam") or {}).get("psnr")
        lines += [f"## {kind}", "", meta["data"].get(kind, ""), "",
                  "| method | unrolls | modules | parameters | peak memory (MiB) | memory / e2e | training (s) | "
                  "of which steps (s) | epochs | time / GLEAM | PSNR (dB) | PSNR - GLEAM | SSIM | NMSE |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("error"):
                lines.append(f"| {r['strategy']} | failed: {r['error']} |" + " |" * 12)
                continue
            mem, t, psnr = r.get("peak_memory_mib"), r.get("train_seconds"), r.get("psnr")
            name = r["strategy"] if r["method"] == "network" else BASELINES.get(r["method"], r["method"])
            lines.append(
                f"| {name} | {_fmt(r['num_unrolls'])} | {_fmt(r['num_modules'])} | {_fmt(r['parameters'])} | "
                f"{_fmt(mem, 1)} | {_fmt(mem / e2e_mem if mem and e2e_mem else None)} | {_fmt(t, 1)} | "
                f"{_fmt(r.get('step_seconds'), 1)} | {_fmt(r['epochs'])} | {_fmt(t / gleam_t if t and gleam_t else None)} | {_fmt(psnr)} | "
                f"{_fmt(psnr - gleam_psnr if psnr is not None and gleam_psnr is not None else None)} | "
                f"{_fmt(r.get('ssim'), 4)} | {_fmt(r.get('nmse'), 4)} |")
        curves = []
        for r in rows:
            if r.get("val_psnr_per_epoch"):
                text = f"{r['strategy']} " + ", ".join(f"{v:.2f}" for v in r["val_psnr_per_epoch"])
                if r.get("val_psnr_per_module"):
                    text += " (last epoch, after each module: " + ", ".join(
                        f"{v:.2f}" for v in r["val_psnr_per_module"].values()) + ")"
                curves.append(text)
        if curves:
            lines += ["", "Validation PSNR (dB) per epoch: " + "; ".join(curves) + "."]
        kind_goals = [g for g in result["goals"] if g["kind"] == kind]
        lines += ["", "| goal | measured | target | result |", "|---|---|---|---|"]
        for g in kind_goals:
            verdict = "not measured" if g["pass"] is None else ("pass" if g["pass"] else "**fail**")
            lines.append(f"| {g['description']} | {_fmt(g['value'])} | {g['target']} | {verdict} |")
        figures = [p for r in rows for p in r.get("figures", [])]
        if figures:
            lines += ["", "Figures (first test volume): " + ", ".join(f"`{p}`" for p in figures)]
        lines.append("")
    lines += ["## Networks", ""] + [f"- {d}" for d in meta["networks"]]
    return "\n".join(lines) + "\n"


def describe_data(cfg: Config, root: Path, quick: bool) -> str:
    from mrirecon.data.build import build_dataset

    counts = {s: len(build_dataset(cfg, root / s)) for s in ("train", "val", "test")}
    return (f"Data: synthetic {cfg.data.kind} in `{common.display_path(root)}`"
            + (" (--quick tiny set)" if quick else "") + f", {counts['train']} / {counts['val']} / "
            f"{counts['test']} train / val / test items, mask {cfg.data.mask}, batch {cfg.data.batch_size}. "
            f"Training: {cfg.train.max_epochs} epochs, {cfg.train.loss} loss, Adam lr {cfg.train.lr:g}, "
            f"weight decay {cfg.train.weight_decay:g}; best checkpoint by validation PSNR.")


def describe_networks(kind: str, configs: dict[str, Config]) -> str:
    e2e, inv = configs["e2e"].model, configs["invertible"].model
    return (f"{kind}: {e2e.dc} unrolls, prox {e2e.prox}, step size bound {e2e.step_size_max}; e2e "
            f"{e2e.num_unrolls} unrolls, GLEAM {configs['gleam'].model.num_unrolls} in "
            f"{configs['gleam'].train.num_modules} modules, checkpoint {configs['checkpoint'].model.num_unrolls}, "
            f"invertible {inv.num_unrolls} with prox {inv.prox} (spectrally normalised residual, needed to "
            f"invert it) and inversion settings {configs['invertible'].train.invertible or 'default'}")


METHOD = ("Peak memory: one training step on the first training batch after a warm-up step, only that network "
          "alive (`measure_step_memory`: on CUDA torch.cuda.max_memory_allocated; on CPU parameters + buffers + "
          "Adam state + batch + the peak of all tensor storages created during the step). Training time: "
          "wall clock of `train()` (validation every epoch included); of which steps: the training steps alone "
          "(forward, backward, optimizer steps; `StepTimer`). Metrics: fastMRI PSNR/SSIM/NMSE on the "
          "test split, mean over volumes, best checkpoint by validation PSNR. Goals as in the issue: GLEAM >= "
          "e2e + 1 dB; checkpoint - GLEAM <= 0.3 dB; checkpoint time / GLEAM time >= 1.25 (wall clock, and steps "
          "alone); premise GLEAM "
          "memory <= 1.1x e2e.")


# ------------------------------------------------------------------------------------------------ main
def experiment_parser(doc: str) -> argparse.ArgumentParser:
    """The options of every matched-memory script: --out, --work, --quick, --device, --progress and overrides."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--out", required=True, type=Path, help="the report's folder: results.json, results.md, figures/")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the run folders (runs/) and evaluations (eval/); default outputs/<name of --out>")
    p.add_argument("--quick", action="store_true", help="tiny data under WORK/quick_data and 1 epoch")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    p.add_argument("overrides", nargs="*", help="dotted config overrides for every run, e.g. train.max_epochs=2")
    return p


def parser() -> argparse.ArgumentParser:
    kinds = available_kinds()
    p = experiment_parser(__doc__)
    p.add_argument("--only", choices=kinds, default=None,
                   help="run one kind (default: all of " + ", ".join(kinds) + ")")
    p.add_argument("--volumes", type=int, default=None, help="volumes of a data set this script generates")
    return p


def run_settings(args: argparse.Namespace) -> tuple[torch.device, list[str]]:
    """The device --device names (auto: CUDA where there is one) and the overrides every run gets (its output
    folder under WORK, Lightning's accelerator for that device)."""
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    return device, [f"output_dir={work_dir(args) / 'runs'}", f"train.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}"]


def work_dir(args: argparse.Namespace) -> Path:
    """Where run folders and evaluations go: --work, else outputs/<name of --out> (git-ignored)."""
    return args.work if args.work is not None else common.ROOT / "outputs" / args.out.name


def quiet_lightning() -> None:
    """Lightning's loggers at WARNING: one progress line per run is enough (it sets their level on import, so
    import it first)."""
    import pytorch_lightning  # noqa: F401

    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    device, fixed = run_settings(args)
    kinds = [args.only] if args.only else available_kinds()
    out, work = args.out, work_dir(args)
    experiments = {}
    for kind in kinds:  # every config is validated before anything runs
        quick = [f"data.root={work / 'quick_data' / kind}", *QUICK_OVERRIDES] if args.quick else []
        experiments[kind] = load_experiment(kind, [*fixed, *quick, *args.overrides])
    quiet_lightning()
    start, date, load_start = time.perf_counter(), common.now_utc(), common.load_average()
    result: dict[str, Any] = {"meta": {
        "schema_version": SCHEMA_VERSION, "command": common.command_line(argv, __file__), "date": date,
        "git_commit": common.git_commit(), "device": device.type, "machine": common.machine_info(device),
        "quick": args.quick, "overrides": list(args.overrides), "load_average_start": load_start,
        "method": METHOD, "data": {}, "networks": [describe_networks(k, c) for k, c in experiments.items()],
        "complete": False}, "rows": [], "goals": []}

    def save() -> None:
        result["meta"].update(wall_time_s=time.perf_counter() - start, load_average_end=common.load_average())
        result["goals"] = goals(result["rows"])
        clean = _finite(result)
        common.write_json(out / "results.json", clean)
        common.write_markdown(out / "results.md", markdown(clean))

    failed = 0
    for kind, configs in experiments.items():
        ref = configs["e2e"]
        root = prepare_data(ref, args.quick, args.volumes)
        result["meta"]["data"][kind] = describe_data(ref, root, args.quick)
        for i, (strategy, cfg) in enumerate(configs.items(), 1):
            try:
                row = run_network(kind, strategy, cfg, out, work, device, f"{i}/{len(configs)}", args.progress)
            except (RuntimeError, ValueError) as e:  # a failed run is reported; the others still run
                failed += 1
                log(f"[{kind} {i}/{len(configs)}] {strategy}: FAILED: {e}")
                row = {"kind": kind, "strategy": strategy, "method": "network", "error": str(e).splitlines()[0]}
            result["rows"].append(row)
            save()
        for method in BASELINES:
            try:
                result["rows"].append(run_baseline(kind, method, ref, work))
            except (RuntimeError, ValueError) as e:
                failed += 1
                log(f"[{kind}] {BASELINES[method]}: FAILED: {e}")
                result["rows"].append({"kind": kind, "strategy": method, "method": method,
                                       "error": str(e).splitlines()[0]})
        save()
    result["meta"]["complete"] = failed == 0
    save()
    log_goals(result["goals"], lambda g: g["kind"])
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} ({time.perf_counter() - start:.0f} s)")
    return result


def log_goals(goals: list[dict], tag: Callable[[dict], str]) -> None:
    """One line per goal: its value against the target and the verdict."""
    for g in goals:
        verdict = "not measured" if g["pass"] is None else ("pass" if g["pass"] else "FAIL")
        log(f"[{tag(g)}] {g['description']}: {_fmt(g['value'])} (target {g['target']}): {verdict}")


def cli(make_parser: Callable[[], argparse.ArgumentParser], run_fn: Callable[..., dict],
        argv: Sequence[str] | None) -> int:
    """A matched-memory script's command line: exit 2 with the message for bad configs or data, 1 when a
    run failed (the others are still reported), 0 when all ran."""
    args = make_parser().parse_args(argv)
    try:
        result = run_fn(args, argv)
    except (ConfigError, DataError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if result["meta"]["complete"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    return cli(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
