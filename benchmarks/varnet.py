"""Benchmark: our unrolled network next to fastMRI's E2E-VarNet, on the same data, in one run.

    python benchmarks/varnet.py --json results/varnet/varnet.json [--size 64 64] [--coils 8] [--batch 1]
                                [--steps 10] [--device cpu|cuda]

Measured for each model: training steps/s (median step time over --steps timed steps after --warmup
untimed ones), inference seconds per slice (median over --infer-repeats no_grad forward passes of a
batch, divided by the batch size), parameter counts and peak memory of one training step and one
inference pass (`mrirecon.training.memory.measure_step_memory`: the CUDA allocator's peak on GPU, an exact
tensor accounting on CPU).

Models:
  - ours: the unrolled network of --config (configs/knee2d.yaml: 8 PGD unrolls, residual-CNN prox),
    built by `build_network`, trained end to end (e2e) and greedily (GLEAM, one unroll per module, one
    Adam per module), Adam with the config's lr and weight decay, the config's loss (L1 on complex images);
  - fastMRI's VarNet (Sriram et al. 2020, `fastmri.models.VarNet`): as many cascades as we have unrolls and
    a U-Net width chosen so that its parameter count (sensitivity network included) is closest to ours;
    Adam with the same lr and weight decay, L1 loss against the RSS target (its output is an RSS image).

Data: a few synthetic knee slices made in memory (`mrirecon.synthetic.phantoms.knee2d` images, smooth coil
maps with sum_c |S_c|^2 = 1, complex Gaussian noise), undersampled by the config's mask (knee2d: 4x random
1D) and normalised by our `ReconTransform`, so both models see the same k-space. Our network gets the coil
maps precomputed (as cached ESPIRiT maps are in training); VarNet estimates its own from the
auto-calibration lines, inside its timed forward pass.

Outputs: the JSON (`meta` block and `rows`) and a markdown table with the same stem, both written atomically.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from mrirecon.config import Config, load_config  # noqa: E402
from mrirecon.synthetic import phantoms  # noqa: E402
from mrirecon.data.masks import build_mask_func, seed_from_name  # noqa: E402
from mrirecon.data.transforms import LoadedSample, RawSlice, ReconTransform  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402
from mrirecon.physics import fftc, ifftc, rss  # noqa: E402
from mrirecon.training.losses import build_loss  # noqa: E402
from mrirecon.training.memory import measure_step_memory  # noqa: E402
from mrirecon.models.build import build_network  # noqa: E402
from mrirecon.data.build import batch_transform  # noqa: E402
from mrirecon.training.strategies import build_strategy, default_optimizers  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "knee2d.yaml"
SCHEMA_VERSION = 1
ROW_KEYS = ("model", "training", "params", "train_step_s", "train_steps_per_s", "infer_s_per_slice",
            "peak_train_mib", "peak_infer_mib", "settings")
NOISE = 0.01  # k-space noise sigma relative to the image maximum, as in mrirecon.synthetic


# ------------------------------------------------------------------------------------------------ data
class Batch(NamedTuple):
    """One batch in both models' conventions (ours: complex tensors; fastMRI: real (..., 2) k-space)."""
    kspace: Tensor      # (B, C, H, W) complex, undersampled, normalised
    maps: Tensor        # (B, 1, C, H, W) complex, sum_c |S_c|^2 = 1
    mask: Tensor        # (B, 1, 1, W) float 0/1
    target: Tensor      # (B, 1, H, W) complex SENSE image of the fully sampled k-space (our loss's target)
    vn_kspace: Tensor   # (B, C, H, W, 2) real view of `kspace`
    vn_mask: Tensor     # (B, 1, 1, W, 1) bool
    vn_target: Tensor   # (B, H, W) RSS of the fully sampled coil images (VarNet's target)
    num_low: int        # fully sampled centre lines (fastMRI's num_low_frequencies)
    loaded: LoadedSample  # what our DataLoader workers hand over (raw k-space, mask, maps): our training step
                          # starts from it with the batch transform, as training does on the device


def coil_maps(coils: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth sensitivities (C, H, W), sum_c |S_c|^2 = 1: coils on a ring outside the field of view, each a
    Gaussian fall-off from its position with a slowly varying phase."""
    H, W = shape
    y, x = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    radius = rng.uniform(1.2, 1.8)
    angles = 2 * np.pi * np.arange(coils) / coils + rng.uniform(0, 2 * np.pi)
    maps = []
    for a in angles:
        cx, cy = radius * np.cos(a), radius * np.sin(a)
        dist2 = (x - cx) ** 2 + (y - cy) ** 2
        phase = a + 0.5 * (x * np.cos(a) + y * np.sin(a))
        maps.append(np.exp(-dist2 / radius**2) * np.exp(1j * phase))
    maps = np.stack(maps)
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))).astype(np.complex64)


def synthetic_batches(cfg: Config, num_slices: int, size: tuple[int, int], coils: int, batch: int,
                      seed: int) -> list[Batch]:
    """`num_slices` knee slices in `ceil(num_slices / batch)` batches (the last one filled up cyclically)."""
    rng = np.random.default_rng(seed)
    images = phantoms.knee2d(rng, num_slices, size)
    transform = ReconTransform(build_mask_func(cfg.data.mask), deterministic=True, target=cfg.data.target)
    samples, raws = [], []
    for i, image in enumerate(images):
        maps = coil_maps(coils, size, rng)
        full = fftc(torch.from_numpy(image[None] * maps), ndim=2)
        sigma = NOISE * float(np.abs(image).max()) / math.sqrt(2)
        full = full + sigma * torch.complex(*torch.from_numpy(rng.standard_normal((2, *full.shape), np.float32)))
        raw = RawSlice(full.numpy(), maps[None], None, f"benchmark_{i:03d}.h5", i, None, 2)
        s = transform(raw)
        raws.append(raw)
        # The transform does not report the mask's centre width: redraw the same mask (validation masks are
        # seeded by the file name) and make sure it is the one the transform drew.
        drawn = transform.mask_func(tuple(full.shape), seed=seed_from_name(raw.fname))
        if not torch.equal(drawn.mask, s.mask):
            raise RuntimeError("could not reproduce ReconTransform's mask (its seeding changed?)")
        num_low = drawn.calib_size[-1]
        samples.append((s, rss(ifftc(full, ndim=2), dim=0) / s.scale, num_low))
    out = []
    for start in range(0, num_slices, batch):
        group = [samples[(start + j) % num_slices] for j in range(batch)]
        if len({n for _, _, n in group}) != 1:
            raise ValueError("data.mask.center_fractions: slices of one batch drew different centre widths, but "
                             "VarNet takes one num_low_frequencies per batch (use one center fraction or --batch 1)")
        kspace = torch.stack([s.kspace for s, _, _ in group])
        mask = torch.stack([s.mask for s, _, _ in group])
        loaded = default_collate([transform.load(raws[(start + j) % num_slices]) for j in range(batch)])
        if not torch.equal(batch_transform(cfg)(loaded).kspace, kspace):
            raise RuntimeError("the batch transform does not reproduce the per-sample transform's k-space")
        out.append(Batch(kspace, torch.stack([s.maps for s, _, _ in group]), mask,
                         torch.stack([s.target for s, _, _ in group]), torch.view_as_real(kspace).contiguous(),
                         mask.bool()[..., None], torch.stack([t for _, t, _ in group]), group[0][2], loaded))
    return out


def to_device(b: Batch, device: torch.device) -> Batch:
    loaded = LoadedSample(*(t.to(device) if isinstance(t, Tensor) else t for t in b.loaded))
    return Batch(*(t.to(device) if isinstance(t, Tensor) else t for t in b[:-1]), loaded)


# ------------------------------------------------------------------------------------------------ models
class Runner(NamedTuple):
    """What the timing loop needs from a model: a training step, an inference pass, its parts."""
    name: str
    training: str
    net: nn.Module
    optimizers: list[torch.optim.Optimizer]
    train_step: Callable[[Batch], float]
    infer: Callable[[Batch], Tensor]
    inputs: Callable[[Batch], list[Tensor]]  # the batch tensors the model reads (counted in its memory)
    settings: dict


def ours(cfg: Config, strategy_name: str, device: torch.device, seed: int) -> Runner:
    torch.manual_seed(seed)
    net = build_network(cfg).to(device)
    options = {"num_modules": net.num_unrolls} if strategy_name == "gleam" else {}
    strategy = build_strategy(strategy_name, net, **options)
    optimizers = default_optimizers(strategy, net, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    loss_fn = build_loss(cfg.train.loss)
    prepare = batch_transform(cfg)  # the device part of our data path, in every step as in training

    def train_step(b: Batch) -> float:
        s = prepare(b.loaded)
        return strategy.step(net, s.kspace, s.maps, s.mask, s.target, loss_fn, optimizers)["loss"]

    def infer(b: Batch) -> Tensor:
        s = prepare(b.loaded)
        return net(s.kspace, s.maps, s.mask)

    m = cfg.model
    settings = {"num_unrolls": m.num_unrolls, "dc": m.dc, "prox": dict(m.prox), "share_weights": m.share_weights,
                "strategy": strategy_name, "optimizers": len(optimizers), "loss": f"{cfg.train.loss} (complex image)",
                "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay}
    if strategy_name == "gleam":
        settings["num_modules"] = options["num_modules"]
    label = f"mrirecon unrolled {m.dc.upper()}"
    settings["batch_transform"] = "in the step (masking, target, zero-filled image, scaling)"
    return Runner(label, strategy_name, net, optimizers, train_step, infer,
                  lambda b: [b.loaded.kspace, b.loaded.maps, b.loaded.mask], settings)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def varnet_options(target_params: int, cascades: int, pools: int, sens_chans: int, sens_pools: int,
                   chans: int | None = None, max_chans: int = 64) -> dict[str, int]:
    """VarNet settings; `chans=None` picks the U-Net width whose total parameter count is closest to ours."""
    from fastmri.models import VarNet

    fixed = dict(num_cascades=cascades, pools=pools, sens_chans=sens_chans, sens_pools=sens_pools)
    if chans is not None:
        return {**fixed, "chans": chans}
    best, best_gap = 1, math.inf
    for c in range(1, max_chans + 1):  # the count grows with the width: stop once past the target
        n = count_params(VarNet(chans=c, **fixed))
        if abs(n - target_params) < best_gap:
            best, best_gap = c, abs(n - target_params)
        if n > target_params:
            break
    return {**fixed, "chans": best}


def check_pooling(size: tuple[int, int], pools: int, what: str) -> None:
    """fastMRI's NormUnet pads H and W up to multiples of 16; its instance norms need > 1 pixel at the bottom."""
    for n in size:
        padded = ((n - 1) | 15) + 1
        if padded % 2**pools or padded // 2**pools < 2:
            raise ValueError(f"{what}={pools} does not fit --size {size[0]} {size[1]}: the U-Net pads {n} to "
                             f"{padded}, which must halve {pools} times to >= 2 pixels; use fewer pools")


def fastmri_varnet(cfg: Config, options: dict[str, int], device: torch.device, seed: int,
                   chans_from: str = "--varnet-chans") -> Runner:
    from fastmri.models import VarNet

    torch.manual_seed(seed)
    net = VarNet(**options).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def train_step(b: Batch) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = F.l1_loss(net(b.vn_kspace, b.vn_mask, b.num_low), b.vn_target)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def infer(b: Batch) -> Tensor:
        return net(b.vn_kspace, b.vn_mask, b.num_low)

    settings = {**options, "chans_from": chans_from, "coil_maps": "estimated by its sensitivity U-Net",
                "loss": "l1 (RSS magnitude)", "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
                "params_sens_net": count_params(net.sens_net)}
    return Runner("fastmri VarNet", "e2e", net, [optimizer], train_step, infer,
                  lambda b: [b.vn_kspace, b.vn_mask, b.vn_target], settings)


# ------------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def measure(runner: Runner, batches: Sequence[Batch], device: torch.device, warmup: int, steps: int,
            infer_repeats: int) -> dict[str, Any]:
    """Time training steps and inference passes of one model; measure peak memory of one of each."""
    net, batch_size = runner.net, batches[0].kspace.shape[0]
    net.train()
    step_times = []
    for i in range(warmup + steps):
        t = timed(lambda: runner.train_step(batches[i % len(batches)]), device)
        if i >= warmup:
            step_times.append(t)
    # Memory of one more (untimed) step: the accounting slows the step down on CPU.
    b = batches[0]
    train_mem = measure_step_memory(lambda: runner.train_step(b), [net], runner.optimizers, runner.inputs(b), device)
    net.eval()
    infer_times = []
    with torch.no_grad():
        runner.infer(b)  # warm-up
        for i in range(infer_repeats):
            bi = batches[i % len(batches)]
            infer_times.append(timed(lambda: runner.infer(bi), device) / batch_size)
        infer_mem = measure_step_memory(lambda: runner.infer(b), [net], (), runner.inputs(b), device)
    step = statistics.median(step_times)
    return {"model": runner.name, "training": runner.training, "params": count_params(net),
            "train_step_s": step, "train_steps_per_s": 1.0 / step, "infer_s_per_slice": statistics.median(infer_times),
            "peak_train_mib": train_mem["peak_mib"], "peak_infer_mib": infer_mem["peak_mib"],
            "settings": runner.settings, "train_step_times_s": step_times, "infer_times_s_per_slice": infer_times}


# ------------------------------------------------------------------------------------------------ output
def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def markdown(result: dict) -> str:
    meta, rows = result["meta"], result["rows"]
    s = meta["sizes"]
    head = (f"# Unrolled network vs fastMRI VarNet ({s['height']}x{s['width']}, {s['coils']} coils, batch "
            f"{s['batch']}, {meta['device']})\n\n")
    lines = ["| model | training | params | train steps/s | train step (s) | inference (s/slice) "
             "| peak train (MiB) | peak inference (MiB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['training']} | {r['params']:,} | {r['train_steps_per_s']:.3f} "
                     f"| {r['train_step_s']:.4f} | {r['infer_s_per_slice']:.4f} | {r['peak_train_mib']:.1f} "
                     f"| {r['peak_infer_mib']:.1f} |")
    vn = next(r for r in rows if r["model"].startswith("fastmri"))
    our = next(r for r in rows if r["training"] == "e2e" and r is not vn)
    v, mach = vn["settings"], meta["machine"]
    if meta["device"] == "cuda":
        memory = "CUDA allocator peak (parameters, optimizer state and the benchmark's batches included)."
    else:
        memory = ("CPU tensor accounting of mrirecon.training.memory (parameters, buffers, optimizer state, the "
                  "model's inputs and every tensor allocated during the step; not the process RSS).")
    notes = [
        f"- Same synthetic data for every row: {s['slices']} knee slices, {meta['mask']}; timings are medians "
        f"over {s['steps']} training steps after {s['warmup']} warm-up steps and over {s['infer_repeats']} "
        "no_grad inference passes (per slice = per batch / batch size).",
        f"- Parameters: ours {our['params']:,} ({our['settings']['num_unrolls']} unrolls, prox "
        f"{our['settings']['prox']}); VarNet {vn['params']:,} ({v['num_cascades']} cascades, U-Net chans "
        f"{v['chans']}, pools {v['pools']}; sensitivity net chans {v['sens_chans']}, pools {v['sens_pools']}, "
        f"{v['params_sens_net']:,} of its parameters); ratio VarNet/ours {vn['params'] / our['params']:.3f}.",
        "- Coil maps: fastMRI's VarNet estimates its own coil sensitivities with a U-Net from the "
        "auto-calibration lines, inside its timed forward pass and its parameter count; our network uses "
        "precomputed maps (ESPIRiT maps cached once per file in training; here the synthetic maps), whose "
        "estimation is not in our timings.",
        f"- Losses: ours {our['settings']['loss']} against the config's target (data.target); VarNet L1 on its "
        "RSS magnitude output against the RSS target. Both Adam with the config's lr and weight decay.",
        "- Data path: our training step starts from what our DataLoader workers hand over (k-space as read, mask, "
        "maps) and runs the batch transform (masking, target, zero-filled image, scaling; `BatchTransform`, "
        "what training runs on the device) inside the timed step; VarNet's step starts from masked k-space "
        "(fastMRI's worker masks) and does its FFTs and sensitivity estimation in the model.",
        "- gleam: one Adam per module, each step runs every module in turn (forward, loss, backward, "
        "optimizer step), so a step does the same unrolls as e2e plus one optimizer step per module.",
        f"- Machine: {mach['cpu']} ({mach['cpu_count']} CPUs, torch threads: {mach['torch_threads']})"
        + (f", GPU {mach['gpu']}" if mach["gpu"] else "") + f"; torch {meta['torch']}, fastmri {meta['fastmri']}; "
        f"{meta['date']}. CPU timings move with other load on the machine (load average at start / end: "
        f"{meta['load_average']['start']} / {meta['load_average']['end']}).",
        "- Peak memory: one training step / one inference pass, " + memory,
    ]
    run = (f"Command: `{meta['command']}` (under `flock /tmp/mrirecon-bench.lock`; other work shared the machine "
           "when its load average is above its core count)\n\n")
    return head + run + "\n".join(lines) + "\n\nNotes:\n" + "\n".join(notes) + "\n"


# ------------------------------------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--json", required=True, type=Path, help="output JSON; the markdown table goes next to it (.md)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="our network's experiment config")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. model.num_unrolls=4 model.prox.channels=16")
    p.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"), help="image size")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--slices", type=int, default=4, help="distinct synthetic slices, cycled over")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps before the timed ones")
    p.add_argument("--infer-repeats", type=int, default=10, help="timed inference passes per model")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--varnet-cascades", type=int, default=None, help="default: our number of unrolls")
    p.add_argument("--varnet-chans", type=int, default=None, help="default: the width matching our parameters")
    p.add_argument("--varnet-pools", type=int, default=2)
    p.add_argument("--varnet-sens-chans", type=int, default=4)
    p.add_argument("--varnet-sens-pools", type=int, default=2)
    return p


def _check_args(a: argparse.Namespace) -> None:
    minimum = {"--coils": (a.coils, 1), "--batch": (a.batch, 1), "--slices": (a.slices, 1),
               "--steps": (a.steps, 1), "--warmup": (a.warmup, 0), "--infer-repeats": (a.infer_repeats, 1),
               "--threads": (a.threads, 1), "--varnet-cascades": (a.varnet_cascades, 1),
               "--varnet-chans": (a.varnet_chans, 1), "--varnet-pools": (a.varnet_pools, 1),
               "--varnet-sens-chans": (a.varnet_sens_chans, 1), "--varnet-sens-pools": (a.varnet_sens_pools, 1)}
    for flag, (value, low) in minimum.items():
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if min(a.size) < 8:
        raise ValueError(f"--size must be at least 8 8, got {a.size[0]} {a.size[1]}")
    check_pooling(tuple(a.size), a.varnet_pools, "--varnet-pools")
    check_pooling(tuple(a.size), a.varnet_sens_pools, "--varnet-sens-pools")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device available")


def main(argv: Sequence[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    try:
        _check_args(args)
        cfg = load_config(args.config, args.override)
        if cfg.data.kind not in ("knee2d", "brain2d"):
            raise ValueError(f"{args.config}: data.kind {cfg.data.kind!r} is not 2D; VarNet compares on 2D "
                             "multi-coil slices (knee2d, brain2d)")
        size = (args.size[0], args.size[1])
        t_start, load_start = time.perf_counter(), common.load_average()
        batches = synthetic_batches(cfg, args.slices, size, args.coils, args.batch, args.seed)
    except ValueError as e:
        raise SystemExit(f"benchmarks/varnet.py: {e}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = [to_device(b, device) for b in batches]
    options = varnet_options(count_params(build_network(cfg)), args.varnet_cascades or cfg.model.num_unrolls,
                             args.varnet_pools, args.varnet_sens_chans, args.varnet_sens_pools, args.varnet_chans)
    chans_from = "--varnet-chans" if args.varnet_chans else "closest parameter count to ours"
    builders: list[Callable[[], Runner]] = [
        lambda: ours(cfg, "e2e", device, args.seed),
        lambda: ours(cfg, "gleam", device, args.seed),
        lambda: fastmri_varnet(cfg, options, device, args.seed, chans_from),
    ]
    rows = []
    for build in builders:
        runner = build()  # one model at a time, so no other model's memory is in its peak
        print(f"[varnet benchmark] {runner.name} ({runner.training}) ...", file=sys.stderr, flush=True)
        rows.append(measure(runner, batches, device, args.warmup, args.steps, args.infer_repeats))
        del runner
        common.release_memory(device)

    mask = cfg.data.mask
    result = {
        "meta": {
            "schema_version": SCHEMA_VERSION,
            "benchmark": "unrolled network vs fastmri VarNet",
            "command": common.command_line(argv, script=__file__),
            "date": common.now_utc(),
            "machine": common.machine_info(device),
            "load_average": {"start": load_start, "end": common.load_average()},
            "device": device.type,
            "torch": torch.__version__,
            "fastmri": _version("fastmri"),
            "numpy": np.__version__,
            "git_commit": common.git_commit(),
            "config": common.display_path(args.config),
            "overrides": list(args.override),
            "mask": f"{mask.get('name', mask.get('type'))} mask, accelerations {mask.get('accelerations')}, center fractions "
                    f"{mask.get('center_fractions')}",
            "sizes": {"height": size[0], "width": size[1], "coils": args.coils, "batch": args.batch,
                      "slices": args.slices, "steps": args.steps, "warmup": args.warmup,
                      "infer_repeats": args.infer_repeats, "num_low_frequencies": batches[0].num_low},
            "seed": args.seed,
            "wall_s": None,
        },
        "rows": rows,
    }
    result["meta"]["wall_s"] = time.perf_counter() - t_start
    out = Path(args.json)
    common.write_json(out, result)
    table = markdown(result)
    common.write_markdown(out.with_suffix(".md"), table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')} ({result['meta']['wall_s']:.1f} s)", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
