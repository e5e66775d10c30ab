"""Results table: the convex dual denoiser as a prox (fixed, under e2e and GLEAM; fine-tuned) against the
residual-CNN prox at a similar parameter count, on synthetic knee2d or brain2d, with fastMRI metrics
(evaluate.py, against the reference named by the configs' `data.target`, rss by default).

Runs, in order: the standalone convex fit (unless --weights exists), train.py for each config, evaluate.py on
the test split, and the classical baselines (zero-filled; CG-SENSE and L1-wavelet CS tuned on the val split);
writes results/convex/<kind>_table.{json,md}. Configs: configs/convex/<kind>_{fit,fixed,finetune,resnet}.yaml.
A control row trains the same PGD network with the identity as its prox (a convex_dual weights file whose
filters are zero, so z = x): what the step sizes and data consistency alone reach, the floor a fixed prox
has to beat.

    mrirecon synth --kind knee2d --out data/synthetic/knee2d_convex --volumes 14 --slices 3 --size 64 64 --coils 4
    mrirecon maps --data data/synthetic/knee2d_convex
    python benchmarks/convex_prox_table.py [--kind knee2d] [--epochs 10]

    mrirecon synth --kind brain2d --out data/synthetic/brain2d_convex --volumes 14 --slices 3 --size 64 64 --coils 4
    mrirecon maps --data data/synthetic/brain2d_convex
    python benchmarks/convex_prox_table.py --kind brain2d [--epochs 10]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, command_line, load_average, machine_info, now_utc, write_json,  # noqa: E402
                    write_markdown)

KINDS = ("knee2d", "brain2d")
BASELINES = ("zero_filled", "sense", "cs")
BASELINE_NAMES = {"zero_filled": "zero-filled", "sense": "CG-SENSE (tuned on val)", "cs": "L1-wavelet CS (tuned on val)"}


SMALL_RESNET_CHANNELS = 8  # 1,466 prox parameters per unroll, near the fitted convex prox's 800-1,900


def runs(kind: str, identity: str) -> list[tuple[str, str, str, list[str]]]:
    """(table row, output slug, config, extra overrides) per trained method."""
    from mrirecon.config import load_config

    c = f"configs/convex/{kind}"
    prox = load_config(ROOT / f"{c}_resnet.yaml").model.prox
    return [
        ("convex fixed, e2e", "convex_fixed_e2e", f"{c}_fixed.yaml", []),
        ("convex fixed, gleam (4 modules)", "convex_fixed_gleam", f"{c}_fixed.yaml",
         ["train.strategy=gleam", "train.num_modules=4"]),
        ("convex fine-tuned, e2e", "convex_finetune_e2e", f"{c}_finetune.yaml", []),
        (f"resnet ({prox['channels']} ch, {prox['num_blocks']} block), e2e", "resnet_e2e", f"{c}_resnet.yaml", []),
        # the parameter count of the fit lam leaves (19 / 8 patterns x 100 weights), not of its 256 gates
        (f"resnet ({SMALL_RESNET_CHANNELS} ch, {prox['num_blocks']} block), e2e", "resnet_small_e2e",
         f"{c}_resnet.yaml", [f"model.prox.channels={SMALL_RESNET_CHANNELS}"]),
        ("control: identity prox (step sizes only), e2e", "identity_e2e", f"{c}_fixed.yaml",
         [f"model.prox.weights={identity}"]),
    ]


def uses_weights(config: str, weights: str) -> list[str]:
    """The override pointing a convex config at --weights (the resnet config has no weights)."""
    return [f"model.prox.weights={weights}"] if config.endswith(("_fixed.yaml", "_finetune.yaml")) else []


def identity_weights(path: Path) -> str:
    """A convex_dual weights file whose network outputs zero: with `predicts: residual` the prox is z = x."""
    import torch

    from mrirecon.models.convex import TwoLayerReLUConv
    from mrirecon.models.convex.prox import save_weights

    net = TwoLayerReLUConv(2, 1, 1)
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.conv2.weight.zero_()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path, net, "residual", {"note": "identity prox (control row of convex_prox_table.py)"})
    return str(path.relative_to(ROOT))


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def fit_text(info: dict) -> str:
    """One sentence on the convex fit behind the prox: size, program, certificate."""
    st, data = info["settings"], info["data"]
    k = st["kernel_size"]
    inputs = {"zero_filled": "the zero-filled image", "noisy": f"the target plus noise (std {st.get('noise_std')})",
              "unroll": f"the {st.get('unroll_steps')} PGD data-consistency iterates (step {st.get('step_size')}) the "
                        "prox sees inside the unrolls"}
    text = (f"{info['hidden']} hidden units from {info['patterns']} patterns ({st['num_gates']} gates), {k}x{k} patches, "
            f"{data['patches']} patches of {data['slices']} training slices, input: "
            f"{inputs.get(st.get('input', 'zero_filled'))}, lam {info.get('lam', st['lam']):.3g}")
    if info.get("lam_max") is not None:
        text += f" ({info['lam'] / info['lam_max']:.3g} lam_max)"
    if info.get("val_psnr_gain_db") is not None:
        text += (f", chosen on the val split from the lam path below (held-out denoising gain "
                 f"{info['val_psnr_gain_db']:+.3f} dB)")
    program = st.get("program", "relu")
    if program == "gated":
        text += (f"; gated program solved {'matrix-free' if not info.get('gram') else 'on the Gram matrix'} "
                 f"(objective {info['objective']:.6g}, relative duality gap {info['gap']:.1e}, "
                 f"{info['iterations']} iterations, {info['solve_seconds']} s, certified: {info['converged']}); the prox "
                 "is the gated-ReLU network (fixed gates)")
    else:
        text += (f"; exact ReLU program by the augmented Lagrangian: objective {info['objective']:.6g}, violation "
                 f"{info['violation']:.1e}, gap {info.get('gap', float('nan')):.1e}, certified: {info['converged']} "
                 f"({info['solve_seconds']} s)")
    return text + "."


def mask_text(mask: dict) -> str:
    """'4x random mask, centre fraction 0.08' from a data.mask config."""
    accels = "/".join(f"{a:g}" for a in mask.get("accelerations", []))
    fracs = "/".join(f"{f:g}" for f in mask.get("center_fractions", []))
    return f"{accels}x {mask.get('name', 'random')} mask, centre fraction {fracs}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=KINDS, default="knee2d", help="synthetic anatomy (default knee2d)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed of each training run")
    p.add_argument("--reuse", action="store_true", help="reuse runs already trained and evaluated (after an "
                   "interrupted run): their checkpoints under runs/convex and metrics under outputs/convex")
    p.add_argument("--methods", nargs="+", help="output slugs of the rows to run (default all): "
                   "convex_fixed_e2e convex_fixed_gleam convex_finetune_e2e resnet_e2e resnet_small_e2e identity_e2e")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                   help="classical rows (default all; CG-SENSE and CS are tuned on the val split)")
    p.add_argument("--data", help="dataset root (default data/synthetic/<kind>_convex)")
    p.add_argument("--weights", help="convex prox weights; fitted when missing (default results/convex/<kind>_prox.pt)")
    p.add_argument("--fit-config", help="default configs/convex/<kind>_fit.yaml")
    p.add_argument("--out", help="output stem (default results/convex/<kind>_table)")
    args = p.parse_args(argv)
    kind = args.kind
    data = args.data or f"data/synthetic/{kind}_convex"
    weights = args.weights or f"results/convex/{kind}_prox.pt"
    fit_config = args.fit_config or f"configs/convex/{kind}_fit.yaml"
    out = ROOT / (args.out or f"results/convex/{kind}_table")
    py = sys.executable
    load_before = load_average()
    fitted_now = not (ROOT / weights).is_file()
    if fitted_now:
        run([py, "-m", "mrirecon", "convex", "fit", "--config", fit_config, "--out", weights,
             "--no-progress", f"data.root={data}"])
    import torch

    from mrirecon.config import load_config
    from mrirecon.training.module import load_module

    info = torch.load(ROOT / weights, weights_only=True)["info"]
    identity = identity_weights(ROOT / "outputs" / "convex" / kind / "identity_prox.pt")
    plan = [r for r in runs(kind, identity) if not args.methods or r[1] in args.methods]
    if not plan:
        raise SystemExit(f"--methods: none of {args.methods} is a row of the table")
    first = load_config(ROOT / plan[0][2], [f"data.root={data}"])
    for _, _, config, _ in plan:  # the whole table is read against one reference
        if load_config(ROOT / config).data.target != first.data.target:
            raise ValueError(f"{config}: data.target differs from {plan[0][2]} ({first.data.target})")
    rows, references, reused = [], set(), []
    # training times of reused runs, from the table they were first measured for
    earlier = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {"rows": []}
    earlier_seconds = {r["checkpoint"]: r["train_seconds"] for row in earlier["rows"] for r in row["seeds"]}
    for name, slug, config, extra in plan:
        per_seed = []
        for seed in args.seeds:
            eval_dir = ROOT / "outputs" / "convex" / kind / f"{slug}_seed{seed}"
            done = sorted((ROOT / "runs" / "convex").glob(f"{kind}_{slug}_seed{seed}/version_*/checkpoints/best-*.ckpt"))
            if args.reuse and done and (eval_dir / "metrics.json").is_file():
                ckpt = str(done[-1])   # trained and evaluated by an earlier run
                seconds = earlier_seconds.get(ckpt)
                reused.append(f"{slug}_seed{seed}")
            else:
                t0 = time.perf_counter()
                stdout = run([py, "train.py", "--config", config, "--no-progress", f"train.max_epochs={args.epochs}",
                              f"train.seed={seed}", f"data.root={data}", *uses_weights(config, weights),
                              "output_dir=runs/convex", *extra,
                              f"name={kind}_{slug}_seed{seed}"])
                seconds = time.perf_counter() - t0
                ckpt = next(line.split(":", 1)[1].strip() for line in stdout.splitlines()
                            if line.startswith("best checkpoint:"))
                run([py, "evaluate.py", "--checkpoint", ckpt, "--data", f"{data}/test", "--out", str(eval_dir),
                     "--no-progress"])
            metrics = json.loads((eval_dir / "metrics.json").read_text())
            references.add(metrics["target"])
            net = load_module(ckpt).net
            per_seed.append({"seed": seed, "checkpoint": ckpt,
                             "train_seconds": None if seconds is None else round(seconds, 1),
                             "trainable_parameters": net.num_parameters(),
                             "prox_parameters": sum(p.numel() for p in net.unrolls[0].prox.parameters()),
                             **{m: metrics[m]["mean"] for m in ("psnr", "ssim", "nmse")}})
            print(f"  {name} seed {seed}: PSNR {per_seed[-1]['psnr']:.2f}", flush=True)
        rows.append({"method": name, "config": config, "overrides": extra, "seeds": per_seed,
                     **{k: per_seed[0][k] for k in ("trainable_parameters", "prox_parameters")},
                     "train_seconds": (round(float(np.mean(times)), 1)
                                       if (times := [r["train_seconds"] for r in per_seed if r["train_seconds"]]) else "-"),
                     **{m: float(np.mean([r[m] for r in per_seed])) for m in ("psnr", "ssim", "nmse")},
                     **{f"{m}_std": float(np.std([r[m] for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0
                        for m in ("psnr", "ssim", "nmse")}})
    baselines = {}
    for method in args.baselines:
        out_dir = ROOT / "outputs" / "convex" / kind / method
        run([py, "evaluate.py", "--method", method, "--config", plan[0][2], "--data", f"{data}/test",
             "--out", str(out_dir), "--no-progress", f"data.root={data}"])
        metrics = json.loads((out_dir / "metrics.json").read_text())
        baselines[method] = metrics
        references.add(metrics["target"])
        rows.append({"method": BASELINE_NAMES[method], "config": None, "overrides": [], "seeds": [],
                     "train_seconds": 0, "trainable_parameters": 0, "prox_parameters": 0,
                     "settings": metrics.get("baseline_params"),
                     **{m: metrics[m]["mean"] for m in ("psnr", "ssim", "nmse")},
                     **{f"{m}_std": 0.0 for m in ("psnr", "ssim", "nmse")}})
    if len(references) != 1:
        raise RuntimeError(f"evaluations used different references: {sorted(references)}")
    zf = next(iter(baselines.values())) if baselines else {"reference": None, "num_volumes": "?", "num_slices": "?"}
    target = references.pop()
    reference = zf["reference"]
    result = {"meta": {"command": command_line(argv), "date": now_utc(), "machine": machine_info("cpu"),
                       "load_average_before": load_before, "load_average_after": load_average()},
              "kind": kind, "data": data, "mask": first.data.mask, "epochs": args.epochs, "seeds": args.seeds,
              "num_unrolls": first.model.num_unrolls, "target": target, "reference": reference,
              "weights": weights, "fitted_in_this_run": fitted_now, "convex_fit": info, "rows": rows}
    write_json(out.with_suffix(".json"), result)
    fit_data = info["data"]
    lines = [f"# Convex dual prox vs residual CNN prox (synthetic {kind})", "",
             f"Command: `{result['meta']['command']}`  ", f"Date: {result['meta']['date']}  ",
             f"Machine: {result['meta']['machine']['cpu']}, "
             f"{result['meta']['machine']['usable_cores']} usable cores; load average (1/5/15 min) "
             f"{result['meta']['load_average_before']} before, {result['meta']['load_average_after']} after: other "
             "people's jobs shared the 2 cores, so the times are not benchmarks", "",
             f"Evaluation reference: **{target}** (`data.target={target}`: {reference}); fastMRI's PSNR / SSIM / "
             f"NMSE (evaluate.py), means over the {zf['num_volumes']} test volumes ({zf['num_slices']} slices).", "",
             f"Data: `{data}` ({mask_text(first.data.mask)}), PGD with {first.model.num_unrolls} unrolls, "
             f"{args.epochs} epochs each. Convex fit (`{weights}`, "
             f"{'fitted in this run' if fitted_now else 'fitted earlier, reused'}; config `{fit_config}`): "
             f"{fit_text(info)}", "",
             f"Each trained row: mean +- sample std over train.seed in {args.seeds} (one convex fit serves all seeds). "
             "Classical rows: one deterministic reconstruction each (std 0)."
             + (f" Reused (--reuse: trained and evaluated by an earlier run, their training times as measured then): "
                f"{', '.join(reused)}; the classical rows were re-evaluated in this run." if reused else ""), "",
             "| method | PSNR | SSIM | NMSE | trainable params | prox params / unroll | train (s, mean) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['psnr']:.2f} +- {r['psnr_std']:.2f} | {r['ssim']:.4f} +- {r['ssim_std']:.4f} | "
                     f"{r['nmse']:.4f} +- {r['nmse_std']:.4f} | "
                     f"{r['trainable_parameters']} | {r['prox_parameters']} | {r['train_seconds']} |")
    if info.get("path"):
        lines += ["", "The fit's lam path (each lam solved from the previous solution; gain = 10 log10 of the val split's "
                  "MSE before / after the prox, on the same kind of input the fit used):", "",
                  "| lam / lam_max | hidden | objective | relative gap | iterations | s | val gain (dB) |",
                  "|---|---|---|---|---|---|---|"]
        for q in info["path"]:
            lines.append(f"| {q['lam_fraction']:.3g} | {q['hidden']} | {q['objective']:.6g} | {q['gap']:.1e} | "
                         f"{q['iterations']} | {q['solve_seconds']:.0f} | {q['val_psnr_gain_db']:+.3f} |")
    lines += ["", "Small synthetic data and short training: a comparison at one budget, not a claim about the methods."]
    write_markdown(out.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
