"""Results table: the convex dual denoiser as a prox (fixed, under e2e and GLEAM; fine-tuned) against the
residual-CNN prox at a similar parameter count, on synthetic knee2d or brain2d, with fastMRI metrics
(evaluate.py, against the reference named by the configs' `data.target`, rss by default).

Runs, in order: the standalone convex fit (unless --weights exists), train.py for each config, evaluate.py on
the test split, and the zero-filled baseline; writes results/convex/<kind>_table.{json,md}. Configs:
configs/convex/<kind>_{fit,fixed,finetune,resnet}.yaml.

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
from common import ROOT, command_line, machine_info, now_utc, write_json, write_markdown  # noqa: E402

KINDS = ("knee2d", "brain2d")


def runs(kind: str) -> list[tuple[str, str, str, list[str]]]:
    """(table row, output slug, config, extra overrides) per trained method."""
    c = f"configs/convex/{kind}"
    return [
        ("convex fixed, e2e", "convex_fixed_e2e", f"{c}_fixed.yaml", []),
        ("convex fixed, gleam (4 modules)", "convex_fixed_gleam", f"{c}_fixed.yaml",
         ["train.strategy=gleam", "train.num_modules=4", f"name={kind}_convex_fixed_gleam"]),
        ("convex fine-tuned, e2e", "convex_finetune_e2e", f"{c}_finetune.yaml", []),
        ("resnet (36 ch, 1 block), e2e", "resnet_e2e", f"{c}_resnet.yaml", []),
    ]


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
    text = (f"{info['hidden']} hidden units from {info['patterns']} patterns ({st['num_gates']} gates), {k}x{k} patches, "
            f"{data['patches']} patches of {data['slices']} training slices, lam {info.get('lam', st['lam']):.3g}")
    if info.get("lam_max") is not None:
        text += f" ({info['lam'] / info['lam_max']:.3g} lam_max)"
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
                   "convex_fixed_e2e convex_fixed_gleam convex_finetune_e2e resnet_e2e")
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
    fitted_now = not (ROOT / weights).is_file()
    if fitted_now:
        run([py, "-m", "mrirecon", "convex", "fit", "--config", fit_config, "--out", weights,
             "--no-progress", f"data.root={data}"])
    import torch

    from mrirecon.config import load_config
    from mrirecon.training.module import load_module

    info = torch.load(ROOT / weights, weights_only=True)["info"]
    plan = [r for r in runs(kind) if not args.methods or r[1] in args.methods]
    if not plan:
        raise SystemExit(f"--methods: none of {args.methods} is a row of the table")
    first = load_config(ROOT / plan[0][2], [f"data.root={data}"])
    for _, _, config, _ in plan:  # the whole table is read against one reference
        if load_config(ROOT / config).data.target != first.data.target:
            raise ValueError(f"{config}: data.target differs from {plan[0][2]} ({first.data.target})")
    rows, references = [], set()
    for name, slug, config, extra in plan:
        per_seed = []
        for seed in args.seeds:
            eval_dir = ROOT / "outputs" / "convex" / kind / f"{slug}_seed{seed}"
            done = sorted((ROOT / "runs" / "convex").glob(f"{kind}_{slug}_seed{seed}/version_*/checkpoints/best-*.ckpt"))
            if args.reuse and done and (eval_dir / "metrics.json").is_file():
                ckpt, seconds = str(done[-1]), None   # trained and evaluated by an earlier, interrupted run
            else:
                t0 = time.perf_counter()
                stdout = run([py, "train.py", "--config", config, "--no-progress", f"train.max_epochs={args.epochs}",
                              f"train.seed={seed}", f"data.root={data}", "output_dir=runs/convex", *extra,
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
    zf_dir = ROOT / "outputs" / "convex" / kind / "zero_filled"
    run([py, "evaluate.py", "--method", "zero_filled", "--config", plan[0][2], "--data", f"{data}/test",
         "--out", str(zf_dir), "--no-progress", f"data.root={data}"])
    zf = json.loads((zf_dir / "metrics.json").read_text())
    references.add(zf["target"])
    if len(references) != 1:
        raise RuntimeError(f"evaluations used different references: {sorted(references)}")
    rows.append({"method": "zero-filled", "config": None, "overrides": [], "seeds": [], "train_seconds": 0,
                 "trainable_parameters": 0, "prox_parameters": 0,
                 **{m: zf[m]["mean"] for m in ("psnr", "ssim", "nmse")},
                 **{f"{m}_std": 0.0 for m in ("psnr", "ssim", "nmse")}})
    target = references.pop()
    reference = zf["reference"]
    result = {"meta": {"command": command_line(argv), "date": now_utc(), "machine": machine_info("cpu")},
              "kind": kind, "data": data, "mask": first.data.mask, "epochs": args.epochs, "seeds": args.seeds,
              "num_unrolls": first.model.num_unrolls, "target": target, "reference": reference,
              "weights": weights, "fitted_in_this_run": fitted_now, "convex_fit": info, "rows": rows}
    write_json(out.with_suffix(".json"), result)
    fit_data = info["data"]
    lines = [f"# Convex dual prox vs residual CNN prox (synthetic {kind})", "",
             f"Command: `{result['meta']['command']}`  ", f"Date: {result['meta']['date']}  ",
             f"Machine: {result['meta']['machine']['cpu']}, "
             f"{result['meta']['machine']['usable_cores']} usable cores", "",
             f"Evaluation reference: **{target}** (`data.target={target}`: {reference}); fastMRI's PSNR / SSIM / "
             f"NMSE (evaluate.py), means over the {zf['num_volumes']} test volumes ({zf['num_slices']} slices).", "",
             f"Data: `{data}` ({mask_text(first.data.mask)}), PGD with {first.model.num_unrolls} unrolls, "
             f"{args.epochs} epochs each. Convex fit (`{weights}`, "
             f"{'fitted in this run' if fitted_now else 'fitted earlier, reused'}; config `{fit_config}`): "
             f"{fit_text(info)}", "",
             f"Each trained row: mean +- sample std over train.seed in {args.seeds} (one convex fit serves all seeds).", "",
             "| method | PSNR | SSIM | NMSE | trainable params | prox params / unroll | train (s, mean) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['psnr']:.2f} +- {r['psnr_std']:.2f} | {r['ssim']:.4f} +- {r['ssim_std']:.4f} | "
                     f"{r['nmse']:.4f} +- {r['nmse_std']:.4f} | "
                     f"{r['trainable_parameters']} | {r['prox_parameters']} | {r['train_seconds']} |")
    lines += ["", "Small synthetic data and short training: a comparison at one budget, not a claim about the methods."]
    write_markdown(out.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
