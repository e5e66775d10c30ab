"""Benchmark: peak memory and step time of the four training strategies on one network, in one run.

    python benchmarks/strategies.py --json results/strategies/strategies.json [--device auto|cpu|cuda]
        [--unrolls 4 8 16] [--size 128 128] [--coils 8] [--channels 16] [--batch 1] [--repeats 3] [--dims 2|3]
        [--lipschitz 0.9|none] [--threads T] [--no-gradient-check]

For every N in --unrolls and every strategy -- e2e, checkpoint, invertible (MEL), gleam with M = N
modules (one unroll each) and gleam with M = N/4 (four unrolls each) -- the same network is trained on
the same batch:
  - network: UnrolledNet, PGD data consistency with step_size_max 1.0 (alpha_k in (0, 1), so the
    gradient step is invertible since ||A^H A|| <= 1), residual-CNN prox (2 residual blocks of --channels,
    spectrally normalised to Lipschitz 0.9 so the fixed-point inversion converges). Every strategy gets
    this prox -- the invertible strategy needs it, and "the same network" means the same for all.
    Weights: one seeded network of max(N) unrolls; the N-unroll networks take its first N unrolls.
    `--lipschitz none` runs GLEAM's plain residual CNN instead (no spectral normalisation) for every
    strategy but the invertible one, which cannot run without it. The normalisation holds no input-sized
    state (each convolution is divided by a certified bound on its norm, a function of its kernel only);
    it costs time once per weight update per convolution (~3 ms for a 16->16 3x3 kernel on this CPU,
    whatever the image size), paid by every strategy alike: each strategy certifies the unrolls it is
    about to run (`UnrolledNet.prepare`), a GLEAM module only its own.
  - invertible: the strategy's default inversion settings (100 fixed-point iterations to relative residual
    1e-6 for the prox, 100 CG iterations to 1e-7 for the gradient step). Its row reports
    `inversion_error` (worst relative consistency ||unroll(rebuilt input) - output|| / ||output|| over
    unrolls and timed steps) and, from one extra untimed step on copies of the trained network,
    `inversion_input_error` (worst relative error of the rebuilt inputs against the stored true ones) and
    `gradient_error_vs_e2e` (||g_invertible - g_e2e|| / ||g_e2e|| over all parameters, same weights).
  - data: --batch smooth random complex images (complex Gaussian k-space under a Gaussian envelope,
    peak magnitude 1), smooth random complex coil maps normalised to unit sum of squares at every pixel,
    one fastMRI-style random 1D mask (4x, centre fraction 0.08) along the last dim, noise-free k-space
    y = A x; loss: L1 on the complex image (GLEAM's).
  - optimizers: Adam (lr 1e-4, weight decay 1e-4), one per GLEAM module, one for the other strategies.

What is measured, for each configuration:
  - peak memory of one training step after a warm-up step (so Adam's state exists), measured by
    `mrirecon.training.memory.measure_step_memory`: on CUDA with only that configuration's network on
    the device; on CPU the accounting counts only that configuration's tensors. `peak_memory_mib` is the
    raw peak: on CUDA `torch.cuda.max_memory_allocated` after
    `reset_peak_memory_stats` (everything allocated on the device, the batch included); on CPU the exact
    accounting: parameters + buffers + Adam state + the batch (held before the step) plus the peak of all
    tensor storages created during the step (activations, gradients, recomputations, optimizer
    temporaries; not memory an operator uses internally without returning it, nor allocator/Python
    overhead). `peak_step_mib` is the part above what was held before the step; `saved_activations_mib`
    the peak of the tensors autograd saved for backward (blind to what checkpointing stores itself).
  - step time: median over --repeats timed steps after the warm-up (CUDA synchronised before and after).
    Within one N the strategies take their timed steps in turn (round robin), so a change in the load of
    a shared machine hits every strategy alike rather than the one that ran at that moment.

Defaults (2D 128x128, 8 coils, 16 channels, batch 1, N = 4, 8, 16, 3 repeats) take about 2-4 minutes
on two slow CPU cores. The script itself computes the issue's targets as ratios (measured value, target,
pass/fail) and writes the JSON (`meta`, `rows`, `ratios`, `summary`), a markdown table (same stem, .md)
and a plot of memory and step time against N (same stem, .png), all atomically.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` and `benchmarks` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from benchmarks import common  # noqa: E402
from mrirecon.data.masks import build_mask_func  # noqa: E402
from mrirecon.models import UnrolledNet  # noqa: E402
from mrirecon.physics import SenseOp, ifftc  # noqa: E402
from mrirecon.training.invertible import InversionSettings  # noqa: E402
from mrirecon.training.losses import l1_loss  # noqa: E402
from mrirecon.training.memory import measure_step_memory  # noqa: E402
from mrirecon.training.strategies import Strategy, build_strategy, default_optimizers  # noqa: E402

SCHEMA_VERSION = 1
DEFAULT_SIZE = {2: (128, 128), 3: (16, 32, 32)}
ROW_KEYS = ("strategy", "label", "num_unrolls", "num_modules", "parameters", "device", "peak_memory_mib",
            "peak_step_mib", "step_time_s")
LIPSCHITZ, STEP_SIZE_MAX, NUM_BLOCKS = 0.9, 1.0, 2
MASK = {"name": "random", "center_fractions": [0.08], "accelerations": [4]}


class Config(NamedTuple):
    """One row of the benchmark: a strategy (and GLEAM's module count) on an N-unroll network."""

    label: str
    strategy: str
    num_unrolls: int
    num_modules: int


def configs(num_unrolls: int, invertible: bool = True) -> list[Config]:
    """The five rows at one N (four without an invertible prox)."""
    n = num_unrolls
    rows = [Config("e2e", "e2e", n, 1), Config("checkpoint", "checkpoint", n, 1),
            Config("invertible", "invertible", n, 1), Config("gleam M=N", "gleam", n, n),
            Config("gleam M=N/4", "gleam", n, n // 4)]
    return [c for c in rows if invertible or c.strategy != "invertible"]


LABELS = [c.label for c in configs(4)]


# ------------------------------------------------------------------------------------------------ data
class Batch(NamedTuple):
    kspace: Tensor  # (B, C, *S) complex, undersampled
    maps: Tensor    # (B, 1, C, *S) complex, sum_c |S_c|^2 = 1
    mask: Tensor    # (1, 1, 1.., W) float 0/1
    target: Tensor  # (B, 1, *S) complex


def smooth_random(shape: Sequence[int], ndim: int, sigma_fraction: float, g: torch.Generator) -> Tensor:
    """Complex Gaussian k-space under a Gaussian envelope (std sigma_fraction * size, at least one
    k-space sample per dim), back to image space over the last `ndim` dims: a smooth random complex field."""
    k = torch.randn(*shape, dtype=torch.complex64, generator=g)
    for d, n in enumerate(shape[-ndim:], start=len(shape) - ndim):
        freq = torch.arange(n, dtype=torch.float32) - n // 2
        envelope = torch.exp(-0.5 * (freq / max(sigma_fraction * n, 1.0)) ** 2)
        k = k * envelope.reshape(n, *([1] * (len(shape) - 1 - d)))
    return ifftc(k, ndim)


def make_batch(size: Sequence[int], coils: int, batch: int, seed: int, device: torch.device) -> Batch:
    """The benchmark's synthetic problem (the same for every configuration)."""
    g = torch.Generator().manual_seed(seed)
    dims = len(size)
    x = smooth_random((batch, 1, *size), dims, 1 / 16, g)
    x = x / x.abs().amax(dim=tuple(range(1, x.dim())), keepdim=True)
    maps = smooth_random((batch, 1, coils, *size), dims, 1 / 64, g)
    maps = maps / maps.abs().pow(2).sum(dim=(1, 2), keepdim=True).sqrt()  # unit sum of squares: ||A^H A|| <= 1
    mask = build_mask_func(MASK)((coils, *size), seed=seed).mask.reshape(1, 1, *([1] * (dims - 1)), size[-1])
    kspace = SenseOp(maps, mask, dims)(x)
    return Batch(*(t.to(device) for t in (kspace, maps, mask, x)))


# ------------------------------------------------------------------------------------------------ network
def prox_config(channels: int, lipschitz: float | None) -> dict[str, Any]:
    return {"name": "resnet", "channels": channels, "num_blocks": NUM_BLOCKS, "lipschitz": lipschitz}


def make_net(num_unrolls: int, channels: int, dims: int, lipschitz: float | None) -> UnrolledNet:
    return UnrolledNet(num_unrolls, prox_config(channels, lipschitz), "pgd", conv_dims=dims, fft_ndim=dims,
                       step_size_max=STEP_SIZE_MAX)


def initial_state(max_unrolls: int, channels: int, dims: int, lipschitz: float | None, batch: Batch, seed: int,
                  device: torch.device) -> dict[str, Tensor]:
    """Weights of a seeded network with the most unrolls, kept on the CPU: every configuration loads
    (the first N unrolls of) this state, so all start from the same function. One no-grad forward checks
    that the network runs on the data before any configuration is built."""
    torch.manual_seed(seed)
    net = make_net(max_unrolls, channels, dims, lipschitz).to(device)
    with torch.no_grad():
        net(batch.kspace, batch.maps, batch.mask)
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


class Trainer(NamedTuple):
    config: Config
    net: UnrolledNet
    strategy: Strategy
    optimizers: list

    def step(self, batch: Batch) -> dict[str, float]:
        return self.strategy.step(self.net, *batch, l1_loss, self.optimizers)


def build_trainer(config: Config, state: dict[str, Tensor], args: argparse.Namespace,
                  device: torch.device) -> Trainer:
    net = make_net(config.num_unrolls, args.channels, args.dims, args.lipschitz)
    net.load_state_dict({k: v for k, v in state.items() if int(k.split(".")[1]) < config.num_unrolls})
    net.to(device).train()
    options = {"num_modules": config.num_modules} if config.strategy == "gleam" else {}
    strategy = build_strategy(config.strategy, net, **options)
    return Trainer(config, net, strategy, default_optimizers(strategy, net))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _KeepWeights:
    """An optimizer stand-in for the gradient check: clears gradients, never changes a weight."""

    def __init__(self, params):
        self.params = list(params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        pass


def invertible_check(net: UnrolledNet, batch: Batch) -> dict[str, float]:
    """Gradients of the invertible strategy (debug mode: true inputs kept) against e2e, on copies of `net`."""
    ref, inv = copy.deepcopy(net), copy.deepcopy(net)
    build_strategy("e2e", ref).step(ref, *batch, l1_loss, [_KeepWeights(ref.parameters())])
    out = build_strategy("invertible", inv, debug=True).step(inv, *batch, l1_loss, [_KeepWeights(inv.parameters())])

    def flat(m: UnrolledNet) -> Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in m.parameters()])

    g_ref, g_inv = flat(ref), flat(inv)
    return {"gradient_error_vs_e2e": float((g_inv - g_ref).norm() / g_ref.norm().clamp_min(1e-30)),
            "inversion_input_error": out["inversion_error"],
            "inversion_check_consistency": out["inversion_consistency"]}


# ------------------------------------------------------------------------------------------------ measuring
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_memory(config: Config, state: dict[str, Tensor], args: argparse.Namespace, batch: Batch,
                   device: torch.device) -> tuple[Trainer, dict[str, Any]]:
    """Warm-up step, then one measured step; returns the trainer (already warmed up) and the memory."""
    trainer = build_trainer(config, state, args, device)
    trainer.step(batch)  # warm-up: Adam's state exists from here on
    common.release_memory(device)
    out: dict[str, float] = {}
    mem = measure_step_memory(lambda: out.update(trainer.step(batch)), [trainer.net], trainer.optimizers,
                              list(batch), device)
    mem["step_result"] = out
    return trainer, mem


def run_unrolls(num_unrolls: int, state: dict[str, Tensor], args: argparse.Namespace, batch: Batch,
                device: torch.device) -> list[dict[str, Any]]:
    """All strategies at one N: memory one configuration at a time, then round-robin timing."""
    trainers: dict[str, Trainer] = {}
    memory: dict[str, dict[str, Any]] = {}
    rows_here = configs(num_unrolls, invertible=args.lipschitz is not None)
    for config in rows_here:
        t0 = time.perf_counter()
        trainer, memory[config.label] = measure_memory(config, state, args, batch, device)
        log(f"[N={num_unrolls}] {config.label:12s} peak {memory[config.label]['peak_mib']:9.2f} MiB "
            f"({time.perf_counter() - t0:.1f} s for warm-up + measured step)")
        if device.type == "cuda":
            # On CUDA the raw peak counts everything on the device: keep only one network there at a time.
            del trainer
            common.release_memory(device)
        else:
            # The CPU accounting counts only this configuration's tensors, so the warmed-up trainer is kept.
            trainers[config.label] = trainer

    for config in rows_here:
        if config.label not in trainers:
            trainers[config.label] = build_trainer(config, state, args, device)
            trainers[config.label].step(batch)  # warm-up
    times: dict[str, list[float]] = {label: [] for label in trainers}
    results: dict[str, list[dict[str, float]]] = {label: [] for label in trainers}
    for _ in range(args.repeats):
        for label, trainer in trainers.items():
            synchronize(device)
            t0 = time.perf_counter()
            out = trainer.step(batch)
            synchronize(device)
            times[label].append(time.perf_counter() - t0)
            results[label].append(out)
    log(f"[N={num_unrolls}] step times (median s): "
        + ", ".join(f"{label} {statistics.median(t):.3f}" for label, t in times.items()))

    rows = []
    for config in rows_here:
        trainer, mem = trainers[config.label], memory[config.label]
        row: dict[str, Any] = {
            "strategy": config.strategy, "label": config.label, "num_unrolls": config.num_unrolls,
            "num_modules": config.num_modules, "parameters": trainer.net.num_parameters(), "device": str(device),
            "peak_memory_mib": mem["peak_mib"], "peak_step_mib": mem["peak_step_mib"],
            "before_step_mib": mem["before_step_mib"], "saved_activations_mib": mem["peak_saved_mib"],
            "params_mib": mem["params_mib"], "buffers_mib": mem["buffers_mib"], "grads_mib": mem["grads_mib"],
            "optimizer_state_mib": mem["optimizer_state_mib"], "inputs_mib": mem["inputs_mib"],
            "step_time_s": statistics.median(times[config.label]), "step_times_s": times[config.label],
            "loss": results[config.label][-1]["loss"],
        }
        if config.strategy == "invertible":
            steps = [mem["step_result"], *results[config.label]]
            row["inversion_error"] = max(r["inversion_error"] for r in steps)
            if args.gradient_check:
                row.update(invertible_check(trainer.net, batch))
        rows.append(row)
    del trainers
    common.release_memory(device)
    return rows


# ------------------------------------------------------------------------------------------------ targets
def _ratio(rows: dict, a: tuple[str, int], b: tuple[str, int], key: str) -> float | None:
    """rows[a][key] / rows[b][key], or None when a row was not run (no invertible prox) or b's value is 0."""
    if a not in rows or b not in rows or not rows[b][key] > 0:
        return None
    return rows[a][key] / rows[b][key]


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value, the target and pass/fail (None: not measured)."""
    by = {(r["label"], r["num_unrolls"]): r for r in rows}
    unrolls = sorted({r["num_unrolls"] for r in rows})
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, target: float, num_unrolls: Any, **extra: Any) -> None:
        passed = None if value is None else bool(value >= target if op == ">=" else value <= target)
        out.append({"ratio": name, "num_unrolls": num_unrolls, "value": value, "target": f"{op} {target:g}",
                    "target_value": target, "pass": passed, **extra})

    for n in unrolls:
        e2e, ckpt, inv, gleam_n = ("e2e", n), ("checkpoint", n), ("invertible", n), ("gleam M=N", n)
        gleams = {"M=N": gleam_n, "M=N/4": ("gleam M=N/4", n)}
        add("memory e2e / gleam(M=N)", _ratio(by, e2e, gleam_n, "peak_memory_mib"), ">=", 0.8 * n, n,
            value_above_start=_ratio(by, e2e, gleam_n, "peak_step_mib"))
        for m, g in gleams.items():
            add(f"time gleam({m}) / e2e", _ratio(by, g, e2e, "step_time_s"), "<=", 1.1, n)
        for m, g in gleams.items():
            add(f"time checkpoint / gleam({m})", _ratio(by, ckpt, g, "step_time_s"), ">=", 1.25, n)
        for m, g in gleams.items():
            add(f"time invertible / gleam({m})", _ratio(by, inv, g, "step_time_s"), ">=", 1.3, n)
    # Needs two values of N (and invertible rows); otherwise reported as not measured.
    lo, hi = ("invertible", unrolls[0]), ("invertible", unrolls[-1])
    two = unrolls[-1] > unrolls[0]
    add(f"memory invertible N={hi[1]} / N={lo[1]}", _ratio(by, hi, lo, "peak_memory_mib") if two else None,
        "<=", 1.2, [lo[1], hi[1]], value_above_start=_ratio(by, hi, lo, "peak_step_mib") if two else None)
    return out


# ------------------------------------------------------------------------------------------------ outputs
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    meta, rows = result["meta"], result["rows"]
    s, m = meta["sizes"], meta["machine"]
    where = m["gpu"] if meta["device"] == "cuda" else f"{m['cpu']}, torch threads: {m['torch_threads']}"
    lines = [
        f"# Training strategies: peak memory and step time ({'x'.join(map(str, s['size']))}, {s['coils']} coils, "
        f"{s['channels']} channels, batch {s['batch']}, {meta['device']})", "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; wall time {meta['wall_time_s']:.0f} s; commit {meta['git_commit']}",
        f"- Machine: {where}; {m['cpu_count']} CPUs ({m['usable_cores']} usable); {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}; load average at start {meta['load_average_start']}, "
        f"end {meta['load_average_end']}",
        f"- Network: {meta['network']['description']}",
        f"- Data: {meta['data']}",
        f"- Memory: {meta['memory_method']}",
        f"- Time: {meta['timing_method']}", "",
        "| strategy | N | M | params | peak memory (MiB) | held before (MiB) | of which buffers (MiB) "
        "| above start (MiB) | saved activations (MiB) | step time (s) | inversion error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['num_unrolls']} | {r['num_modules']} | {r['parameters']:,} "
                     f"| {r['peak_memory_mib']:.2f} | {r['before_step_mib']:.2f} | {r['buffers_mib']:.2f} "
                     f"| {r['peak_step_mib']:.2f} | {r['saved_activations_mib']:.2f} "
                     f"| {r['step_time_s']:.3f} | {_fmt(r.get('inversion_error'))} |")
    inv = [r for r in rows if "gradient_error_vs_e2e" in r]
    if inv:
        lines += ["", "Invertible exactness (one extra untimed step on copies of the trained network): "
                  + "; ".join(f"N={r['num_unrolls']}: gradient error vs e2e {_fmt(r['gradient_error_vs_e2e'])}, "
                              f"rebuilt-input error {_fmt(r['inversion_input_error'])}" for r in inv) + "."]
    lines += ["", "## Targets", "", "| ratio | N | measured | target | pass | memory above start |",
              "|---|---:|---:|---:|---|---:|"]
    for q in result["ratios"]:
        n = q["num_unrolls"] if not isinstance(q["num_unrolls"], list) else "/".join(map(str, q["num_unrolls"]))
        verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[q["pass"]]
        above = _fmt(q["value_above_start"]) if "value_above_start" in q else ""
        lines.append(f"| {q['ratio']} | {n} | {_fmt(q['value'])} | {q['target']} | {verdict} | {above} |")
    summary = result["summary"]
    lines += ["", f"{summary['passed']} passed, {summary['failed']} failed, {summary['not_measured']} not measured.",
              "", "Memory ratios use the raw peaks; the last column gives them for the memory above what was "
              "held before the step (`value_above_start` in the JSON). The normalised convolutions hold no "
              "buffers (their certified norms depend on the kernels only), so the buffers column is 0."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    unrolls = sorted({r["num_unrolls"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label in [lb for lb in LABELS if any(r["label"] == lb for r in rows)]:
        pts = sorted((r["num_unrolls"], r["peak_memory_mib"], r["step_time_s"]) for r in rows if r["label"] == label)
        n = [p[0] for p in pts]
        axes[0].plot(n, [p[1] for p in pts], marker="o", label=label)
        axes[1].plot(n, [p[2] for p in pts], marker="o", label=label)
    for ax, what in zip(axes, ("peak memory of a training step (MiB)", "median step time (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(unrolls, [str(n) for n in unrolls])
        ax.minorticks_off()
        ax.set_xlabel("unrolls N")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    s = result["meta"]["sizes"]
    fig.suptitle(f"{'x'.join(map(str, s['size']))}, {s['coils']} coils, {s['channels']} channels, "
                 f"batch {s['batch']}, {result['meta']['device']}")
    common.save_figure(fig, path)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, type=Path, help="output JSON; the .md and .png go next to it")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when available, else cpu")
    p.add_argument("--unrolls", type=int, nargs="+", default=[4, 8, 16], help="N values, multiples of 4")
    p.add_argument("--size", type=int, nargs="+", default=None,
                   help=f"image size, --dims numbers (default {DEFAULT_SIZE[2]} in 2D, {DEFAULT_SIZE[3]} in 3D)")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--channels", type=int, default=16, help="prox width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per configuration (median reported)")
    p.add_argument("--dims", type=int, default=2, choices=(2, 3), help="2: 2D slices; 3: 3D volumes (3D conv, 3D FFT)")
    p.add_argument("--lipschitz", default=str(LIPSCHITZ),
                   help="Lipschitz bound of the prox residual (spectral normalisation), in (0, 1); 'none': a plain "
                        "residual CNN (GLEAM's) for every strategy, and no invertible rows (it needs the bound)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gradient-check", dest="gradient_check", action="store_false",
                   help="skip the extra untimed invertible-vs-e2e gradient check")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.size is None:
        args.size = list(DEFAULT_SIZE[args.dims])
    if len(args.size) != args.dims or min(args.size) < 4:
        p.error(f"--size needs {args.dims} numbers >= 4 (--dims {args.dims}), got {args.size}")
    if any(n < 4 or n % 4 for n in args.unrolls) or len(set(args.unrolls)) != len(args.unrolls):
        p.error(f"--unrolls must be distinct multiples of 4 (gleam runs with M = N/4), got {args.unrolls}")
    args.unrolls = sorted(args.unrolls)
    if args.lipschitz.lower() == "none":
        args.lipschitz = None
    else:
        try:
            args.lipschitz = float(args.lipschitz)
        except ValueError:
            p.error(f"--lipschitz must be a number in (0, 1) or 'none', got {args.lipschitz!r}")
        if not 0 < args.lipschitz < 1:
            p.error(f"--lipschitz must be in (0, 1) (the invertible strategy inverts the prox by fixed-point "
                    f"iteration, which needs a contraction) or 'none', got {args.lipschitz}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    for name in ("coils", "channels", "batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.json.suffix != ".json":
        p.error(f"--json must name a .json file, got {args.json}")
    return args


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start, load_start, date = time.perf_counter(), common.load_average(), common.now_utc()
    batch = make_batch(args.size, args.coils, args.batch, args.seed, device)
    state = initial_state(max(args.unrolls), args.channels, args.dims, args.lipschitz, batch, args.seed, device)
    log(f"initial network state ready ({time.perf_counter() - start:.1f} s)")
    rows = [row for n in args.unrolls for row in run_unrolls(n, state, args, batch, device)]
    targets = ratios(rows)
    settings = InversionSettings()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "command": common.command_line(argv, __file__),
        "date": date, "git_commit": common.git_commit(), "wall_time_s": time.perf_counter() - start,
        "device": device.type, "machine": common.machine_info(device),
        "load_average_start": load_start, "load_average_end": common.load_average(),
        "sizes": {"dims": args.dims, "size": list(args.size), "coils": args.coils, "channels": args.channels,
                  "batch": args.batch, "unrolls": args.unrolls, "repeats": args.repeats, "seed": args.seed},
        "network": {
            "dc": "pgd", "step_size_max": STEP_SIZE_MAX,
            "prox": prox_config(args.channels, args.lipschitz),
            "description": f"UnrolledNet, PGD data consistency (alpha_k = {STEP_SIZE_MAX:g} sigmoid(raw)), "
                           f"residual-CNN prox ({NUM_BLOCKS} residual blocks, {args.channels} channels, "
                           + (f"spectrally normalised to Lipschitz {args.lipschitz:g}" if args.lipschitz else
                              "plain convolutions: no invertible rows") + "), the same for every strategy",
            "invertible_settings": {"prox_iters": settings.prox_iters, "prox_tol": settings.prox_tol,
                                    "cg_iters": settings.cg_iters, "cg_tol": settings.cg_tol},
        },
        "data": (f"batch {args.batch} of smooth random complex images (peak magnitude 1), smooth random coil "
                 f"maps with unit sum of squares, random 1D mask along the last dim ({MASK['accelerations'][0]}x, "
                 f"centre fraction {MASK['center_fractions'][0]}), noise-free k-space; L1 loss on the complex "
                 "image; Adam lr 1e-4, weight decay 1e-4 (one per GLEAM module)"),
        "memory_method": "one training step after a warm-up step; " + (
            "only that configuration's network on the device; raw peak = torch.cuda.max_memory_allocated after "
            "reset_peak_memory_stats (everything allocated on the device); above start = raw peak - "
            "torch.cuda.memory_allocated before the step"
            if device.type == "cuda" else
            "exact CPU accounting (mrirecon.training.memory), only that configuration's tensors counted: raw "
            "peak = parameters + buffers + Adam state + batch held before the step + peak of all tensor storages "
            "created during the step (activations, gradients, recomputations, optimizer temporaries); not "
            "counted: memory an operator uses internally without returning it, allocator and Python overhead; "
            "above start = that peak of storages created during the step"),
        "timing_method": (f"median of {args.repeats} timed steps after the warm-up, strategies of one N in turn "
                          "(round robin)" + ("; CUDA synchronised around each step" if device.type == "cuda" else
                                             f"; torch threads: {torch.get_num_threads()}")),
    }
    summary = {"passed": sum(q["pass"] is True for q in targets), "failed": sum(q["pass"] is False for q in targets),
               "not_measured": sum(q["pass"] is None for q in targets)}
    return {"meta": meta, "rows": rows, "ratios": targets, "summary": summary}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args, argv)
    out = args.json
    common.write_json(out, result)
    common.write_markdown(out.with_suffix(".md"), markdown(result))
    plot(result, out.with_suffix(".png"))
    log(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
