"""The equivariance experiment: equivariant proxes against the residual CNN, the protocol of Gunel, Sahiner
et al. (MICCAI 2022, scale-equivariant unrolled networks) at tiny sizes.

    python benchmarks/equivariance.py --out results/equivariance [--quick] [--steps N] [--threads 1]

Data: synthetic knee2d (`mrirecon.synthetic`, its `zoom` option), the same volumes (same seed) at
several zooms: zoom 1 for training and the in-distribution test, zooms 0.6 (anatomy smaller) and 1.6
(larger) for out-of-distribution tests, and zooms 0.8 and 1.25 of the same training volumes as scale
augmentation. ESPIRiT maps cached once; 4x random 1D masks, a new one per training step.

Grid: training volumes (1, 3, all) x augmentation (off, on) x prox (configs/equivariant/*.yaml: resnet,
scale_equivariant, rotation_equivariant, at about the same training memory) x strategy (e2e, gleam with one
unroll per module) x seed. Every run takes the same number of training steps (batch 1, Adam), then is
scored (fastMRI PSNR / SSIM, `mrirecon.evaluation.metrics.evaluate_volume`) on the validation and test
volumes (none is used for selection) at every test zoom; the trained proxes' equivariance errors
(`mrirecon.evaluation.equivariance`) go beside.
Per prox, separately: the training step's time (median over steps, e2e) and peak memory
(`mrirecon.training.memory.measure_step_memory`).

Goal (the issue's): the scale-equivariant prox beats the resnet on out-of-distribution scales and with the
least data, at the same memory. OUT/results.json and OUT/results.md are written atomically after every run.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` and `benchmarks` importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from benchmarks import common  # noqa: E402
from mrirecon.config import Config, load_config  # noqa: E402
from mrirecon.data.coil_maps import embed_maps  # noqa: E402
from mrirecon.data.datasets import ReconDataset  # noqa: E402
from mrirecon.data.masks import build_mask_func  # noqa: E402
from mrirecon.synthetic.generator import generate  # noqa: E402
from mrirecon.data.transforms import RawSlice, ReconTransform  # noqa: E402
from mrirecon.evaluation.volumes import magnitude  # noqa: E402
from mrirecon.evaluation.equivariance import equivariance_errors  # noqa: E402
from mrirecon.evaluation.metrics import evaluate_volume  # noqa: E402
from mrirecon.models.build import build_network  # noqa: E402
from mrirecon.training.losses import l1_loss  # noqa: E402
from mrirecon.training.memory import measure_step_memory  # noqa: E402
from mrirecon.training.strategies import build_strategy, default_optimizers  # noqa: E402

CONFIG_DIR = ROOT / "configs" / "equivariant"
PROXES = ("resnet", "scale_equivariant", "rotation_equivariant")
STRATEGIES = ("e2e", "gleam")
TRAIN_ZOOM, AUGMENT_ZOOMS, OOD_ZOOMS = 1.0, (0.8, 1.25), (0.6, 1.6)
MASK = {"name": "random", "center_fractions": [0.08], "accelerations": [4]}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def zoom_root(data: Path, zoom: float) -> Path:
    return data / f"zoom{zoom:g}"


def prepare_data(data: Path, volumes: int, size: int, coils: int, slices: int) -> None:
    """Every zoom's copy of the same synthetic volumes, with cached ESPIRiT maps (skipped when present)."""
    for zoom in sorted({TRAIN_ZOOM, *AUGMENT_ZOOMS, *OOD_ZOOMS}):
        root = zoom_root(data, zoom)
        if (root / "test").is_dir() and any((root / "test").glob("*.h5")):
            continue
        log(f"data: knee2d zoom {zoom:g} -> {root}")
        generate("knee2d", root, volumes=volumes, seed=0, coils=coils, slices=slices, size=(size, size), zoom=zoom,
                 overwrite=True)
        embed_maps(root, kind="knee2d", calib_width=12)  # synthetic files carry their own maps


def read_slices(root: Path, split: str, num_volumes: int | None = None) -> list[RawSlice]:
    """The raw slices of the first `num_volumes` volumes (by name) of a split, read once into memory."""
    ds = ReconDataset(root / split, "knee2d", require_maps=True)
    keep = range(len(ds.files)) if num_volumes is None else range(min(num_volumes, len(ds.files)))
    return [ds.read(i) for i, (file_index, _) in enumerate(ds.items) if file_index in keep]


def batch_of(sample: Any) -> Any:
    return default_collate([sample])


def experiment_config(prox: str, overrides: Sequence[str]) -> Config:
    return load_config(CONFIG_DIR / f"{prox}.yaml", [f"data.mask={MASK}".replace("'", ""), *overrides])


def step_costs(configs: dict[str, Config], raw: RawSlice, steps: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Per prox: the e2e training step's time (the smallest, over `rounds` rounds that visit the proxes in
    turn, of the median over `steps` steps: other processes on a shared machine inflate some rounds) and
    the peak memory of one step (exact tensor accounting on CPU, after a warm-up step)."""
    b = batch_of(ReconTransform(build_mask_func(MASK), deterministic=True)(raw))
    runs, out = {}, {}
    for prox, cfg in configs.items():
        torch.manual_seed(0)
        net = build_network(cfg)
        strategy = build_strategy("e2e", net)
        opts = default_optimizers(strategy, net, lr=cfg.train.lr)

        def step(net=net, strategy=strategy, opts=opts) -> None:
            strategy.step(net, b.kspace, b.maps, b.mask, b.target, l1_loss, opts)

        step()  # warm-up: Adam's state exists before memory is measured
        memory = measure_step_memory(step, modules=[net], optimizers=opts, inputs=[b.kspace, b.maps, b.mask])
        runs[prox] = step
        out[prox] = {"step_time_s": float("inf"), "peak_memory_mib": memory["peak_mib"],
                     "parameters": net.num_parameters()}
    for _ in range(rounds):
        for prox, step in runs.items():
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            out[prox]["step_time_s"] = min(out[prox]["step_time_s"], statistics.median(times))
    return out


def train(cfg: Config, strategy_name: str, pool: list[RawSlice], steps: int, seed: int) -> tuple[Any, float]:
    """`steps` training steps of batch 1 (a random slice of the pool and a new mask each); returns the
    network and the training time in seconds."""
    torch.manual_seed(seed)
    net = build_network(cfg)
    strategy = build_strategy(strategy_name, net)
    opts = default_optimizers(strategy, net, lr=cfg.train.lr)
    transform = ReconTransform(build_mask_func(cfg.data.mask), deterministic=False, seed=seed)
    order = torch.randint(len(pool), (steps,), generator=torch.Generator().manual_seed(seed)).tolist()
    start = time.perf_counter()
    for step, index in enumerate(order):
        b = batch_of(transform(pool[index], epoch=step))
        strategy.step(net, b.kspace, b.maps, b.mask, b.target, l1_loss, opts)
    return net, time.perf_counter() - start


@torch.no_grad()
def score(net: Any, slices: list[RawSlice]) -> dict[str, float]:
    """fastMRI PSNR / SSIM of the test volume(s) (slices stacked per file), mean over volumes; plus the
    equivariance errors of the network's equivariant proxes on the first zero-filled image."""
    transform = ReconTransform(build_mask_func(MASK), deterministic=True)
    net.eval()
    volumes: dict[str, tuple[list, list]] = {}
    errors: dict[str, float] = {}
    for raw in slices:
        b = batch_of(transform(raw))
        recon = net(b.kspace, b.maps, b.mask)
        if not errors:
            errors = equivariance_errors(net.modules(), net.zero_filled(b.kspace, b.maps, b.mask))
        target, pred = volumes.setdefault(raw.fname, ([], []))
        target.append(magnitude(b.target[0]))
        pred.append(magnitude(recon[0]))
    metrics = [evaluate_volume(np.stack(t), np.stack(p)) for t, p in volumes.values()]
    net.train()
    return {"psnr": float(np.mean([m["psnr"] for m in metrics])), "ssim": float(np.mean([m["ssim"] for m in metrics])),
            **errors}


def _key(r: dict[str, Any]) -> tuple:
    return r["prox"], r["strategy"], r["train_volumes"], r["augment"]


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scale-equivariant vs resnet PSNR, per strategy: out of distribution (mean over the OOD zooms, all
    training volumes, no augmentation) and with the least data (in distribution). `psnr_gain_db` is the
    mean over seeds, `per_seed` each seed's; a goal passes only when every seed gains (a mean carried by
    one lucky seed does not)."""
    out = []
    by = {(*_key(r), r.get("seed", 0)): r for r in rows}
    sizes = sorted({r["train_volumes"] for r in rows})
    seeds = sorted({r.get("seed", 0) for r in rows})
    for strategy in STRATEGIES:
        for label, size, keys in (("out-of-distribution scales", sizes[-1], [f"zoom{z:g}" for z in OOD_ZOOMS]),
                                  ("smallest data", sizes[0], [f"zoom{TRAIN_ZOOM:g}"])):
            per_seed = []
            for seed in seeds:
                a = by.get(("scale_equivariant", strategy, size, False, seed))
                b = by.get(("resnet", strategy, size, False, seed))
                if a is not None and b is not None:
                    per_seed.append(float(np.mean([a["test"][k]["psnr"] - b["test"][k]["psnr"] for k in keys])))
            if per_seed:
                gain = float(np.mean(per_seed))
                out.append({"goal": f"scale_equivariant beats resnet, {label} ({strategy}, {size} volume(s))",
                            "psnr_gain_db": gain, "per_seed": per_seed, "pass": min(per_seed) > 0})
    return out


def _mean_spread(values: list[float], digits: int) -> str:
    """mean, with +- half the range over seeds when there are several."""
    text = f"{np.mean(values):.{digits}f}"
    return text if len(values) < 2 else f"{text} ±{(max(values) - min(values)) / 2:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    zooms = [f"zoom{z:g}" for z in (TRAIN_ZOOM, *OOD_ZOOMS)]
    lines = ["# Equivariant proxes vs the residual CNN (tiny synthetic knee2d)", "",
             f"Command: `{meta['command']}`  ", f"Date (UTC): {meta['date']}  ",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['torch_threads']} torch thread(s), "
             f"torch {meta['machine']['torch']}; load average (1, 5, 15 min) at start "
             f"{meta.get('load_average_at_start')}, at end {meta.get('load_average_at_end')}  ",
             f"Setting: {meta['setting']}", "", "## Cost per prox (e2e training step, batch 1)", "",
             "| prox | parameters | step time (ms) | peak memory (MiB) | memory / resnet |", "|---|---|---|---|---|"]
    base = result["cost"].get("resnet", {}).get("peak_memory_mib")
    for prox, c in result["cost"].items():
        ratio = f"{c['peak_memory_mib'] / base:.2f}" if base else "-"
        lines.append(f"| {prox} | {c['parameters']} | {1000 * c['step_time_s']:.1f} | {c['peak_memory_mib']:.2f} "
                     f"| {ratio} |")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        groups.setdefault(_key(r), []).append(r)
    seeds = max((len(g) for g in groups.values()), default=0)
    lines += ["", "## PSNR (dB) / SSIM by test zoom (zoom 1 in distribution)", "",
              f"Mean over {seeds} seed(s)" + (", ± half the range over seeds." if seeds > 1 else ".")
              + " Equivariance errors of the trained proxes on the first zoom-1 test image (scale: the prox "
              "output, factor 2).", "",
              "| prox | strategy | train volumes | scale aug. | " + " | ".join(zooms)
              + " | scale eq. error x2 | rotation eq. error |", "|" + "---|" * (6 + len(zooms))]
    for (prox, strategy, size, augment), group in groups.items():
        cells = [_mean_spread([r["test"][z]["psnr"] for r in group], 2) + " / "
                 + _mean_spread([r["test"][z]["ssim"] for r in group], 3) for z in zooms]
        first = [r["test"][f"zoom{TRAIN_ZOOM:g}"] for r in group]
        scale_err = [e["scale_equivariance_error_x2"] for e in first if "scale_equivariance_error_x2" in e]
        rot_err = [e["rotation_equivariance_error"] for e in first if "rotation_equivariance_error" in e]
        lines.append(f"| {prox} | {strategy} | {size} | {'yes' if augment else 'no'} | " + " | ".join(cells)
                     + f" | {f'{np.mean(scale_err):.3f}' if scale_err else '-'} | "
                     f"{f'{max(rot_err):.1e}' if rot_err else '-'} |")
    lines += ["", "## Goals", "", "Pass: a PSNR gain with every seed.", "",
              "| goal | PSNR gain (dB), mean | per seed | pass |", "|---|---|---|---|"]
    for g in result["goals"]:
        per_seed = ", ".join(f"{v:+.2f}" for v in g.get("per_seed", [g["psnr_gain_db"]]))
        lines.append(f"| {g['goal']} | {g['psnr_gain_db']:+.2f} | {per_seed} | {'yes' if g['pass'] else '**no**'} |")
    if not result["complete"]:
        lines += ["", "**Incomplete**: the run stopped before every configuration was trained."]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "equivariance")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic" / "equivariance",
                   help="synthetic data folder, one sub-folder per zoom (default data/synthetic/equivariance)")
    p.add_argument("--quick", action="store_true", help="smoke setting: 2 steps, 1 volume size, e2e only")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--volumes", type=int, default=8, help="synthetic volumes (train split about 70%%)")
    p.add_argument("--size", type=int, default=32, help="image size (square)")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per configuration (weights, slices, masks)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    return p


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out, data = args.out, args.data
    steps = 2 if args.quick else args.steps
    volumes = 5 if args.quick else args.volumes
    prepare_data(data, volumes, args.size, coils=4, slices=2 if args.quick else 4)
    configs = {p: experiment_config(p, args.overrides) for p in PROXES}
    train_files = len(ReconDataset(zoom_root(data, TRAIN_ZOOM) / "train", "knee2d").files)
    sizes = [1] if args.quick else sorted({1, min(3, train_files), train_files})
    # Validation and test volumes: no run selects anything on the validation split, so both are unseen.
    tests = {f"zoom{z:g}": read_slices(zoom_root(data, z), "val") + read_slices(zoom_root(data, z), "test")
             for z in (TRAIN_ZOOM, *OOD_ZOOMS)}
    seeds = range(1 if args.quick else args.seeds)
    result: dict[str, Any] = {"meta": {
        "command": common.command_line(argv, __file__), "date": common.now_utc(),
        "machine": common.machine_info("cpu"), "commit": common.git_commit(),
        "load_average_at_start": common.load_average(),
        "setting": f"knee2d {args.size}x{args.size}, 4 coils, {volumes} volumes ({train_files} train), 4x random "
                   f"mask, {steps} steps of batch 1 per run, Adam, seeds {list(seeds)}; scored on "
                   f"{len(tests['zoom1'])} val + test slices; augmentation zooms {AUGMENT_ZOOMS}; "
                   f"test zooms {TRAIN_ZOOM} (in distribution) and {OOD_ZOOMS}",
        "configs": {p: c.model.prox for p, c in configs.items()}},
        "cost": {}, "rows": [], "goals": [], "complete": False}
    first_train = read_slices(zoom_root(data, TRAIN_ZOOM), "train", 1)[0]
    result["cost"] = step_costs(configs, first_train, 3 if args.quick else 10, rounds=1 if args.quick else 3)
    log(f"cost: {result['cost']}")
    strategies = ("e2e",) if args.quick else STRATEGIES
    augments = (False,) if args.quick else (False, True)
    for size, augment, prox, strategy, seed in itertools.product(sizes, augments, PROXES, strategies, seeds):
        zooms = (TRAIN_ZOOM, *AUGMENT_ZOOMS) if augment else (TRAIN_ZOOM,)
        pool = [raw for z in zooms for raw in read_slices(zoom_root(data, z), "train", size)]
        net, seconds = train(configs[prox], strategy, pool, steps, seed=seed)
        row = {"prox": prox, "strategy": strategy, "train_volumes": size, "augment": augment, "seed": seed,
               "train_seconds": seconds, "test": {k: score(net, v) for k, v in tests.items()}}
        result["rows"].append(row)
        log(f"{prox} {strategy} volumes={size} augment={augment} seed={seed}: "
            + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in row["test"].items()) + f" ({seconds:.0f} s)")
        result["goals"] = goals(result["rows"])
        common.write_json(out / "results.json", result)
        common.write_markdown(out / "results.md", markdown(result))
    result["complete"] = True
    result["meta"]["load_average_at_end"] = common.load_average()
    common.write_json(out / "results.json", result)
    common.write_markdown(out / "results.md", markdown(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run(args, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
