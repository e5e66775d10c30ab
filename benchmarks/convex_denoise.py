"""Denoising alone: does a fitted convex prox make the images it is given better, on slices it was not fitted on?

For each convex_dual weights file, and for a residual CNN trained standalone (Adam) on the same training pairs,
the held-out gain 10 log10(MSE(input) / MSE(prox(input))) against the target on the val split, for three
kinds of input:
    zero_filled   A^H y
    unroll        the PGD data-consistency iterates v_k = v_{k-1} - A^H (A v_{k-1} - y), k = 1..4, v_0 = A^H y
                  (what the prox sees inside the unrolls when it changes little)
    in_unroll     the inputs of the prox itself inside a 4-unroll PGD network with step 1 and this prox
                  (per unroll: MSE before and after the prox)
and the same gains on the training slices (the fit's own; a gap between the two is overfitting). Writes
results/convex/<kind>_denoise.{json,md}.

    python benchmarks/convex_denoise.py --weights results/convex/knee2d_prox.pt OLD.pt ... [--resnet-steps 400]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, command_line, load_average, machine_info, now_utc, write_json,  # noqa: E402
                    write_markdown)

INPUTS = ("zero_filled", "unroll")


def pairs(cfg, settings, split: str, kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from mrirecon.models.convex.fit import image_pairs

    return list(image_pairs(cfg, dataclasses.replace(settings, input=kind, max_slices=None), split))


def in_unroll_gains(prox, cfg, split: str, unrolls: int, step: float) -> list[float]:
    """Per unroll k: 10 log10(MSE(v_k) / MSE(prox(v_k))) over the split, inside a PGD network whose every prox
    is `prox` (complex images in, as the unrolls call it)."""
    from mrirecon.data.datamodule import ReconDataModule
    from mrirecon.models.unrolled import gradient_step
    from mrirecon.physics import SenseOp, channels_to_complex, complex_to_channels

    ds = ReconDataModule(cfg).dataset(split)
    before, after = [0.0] * unrolls, [0.0] * unrolls
    for i in range(len(ds)):
        s = ds[i]
        A, y, t = SenseOp(s.maps[None], s.mask[None], 2), s.kspace[None], s.target[None]
        x = A.H(y)
        for k in range(unrolls):
            v = gradient_step(x, A, y, step)
            x = channels_to_complex(prox(complex_to_channels(v)).to(v.real.dtype))
            before[k] += float((v - t).abs().pow(2).sum())
            after[k] += float((x - t).abs().pow(2).sum())
    return [10 * math.log10(b / a) for b, a in zip(before, after)]


def receptive_field(blocks: int, kernel: int) -> int:
    """Side of the resnet prox's receptive field: input conv, two convs per block, output conv."""
    return 1 + (2 + 2 * blocks) * (kernel - 1)


def parse_resnet_shape(text: str) -> tuple[int, int]:
    """'BLOCKSxKERNEL' (e.g. 1x3; 0x3 is a linear 5x5 filter: no block, so no nonlinearity)."""
    try:
        blocks, kernel = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not BLOCKSxKERNEL, e.g. 1x3") from None
    if blocks < 0 or kernel < 1 or kernel % 2 == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: needs blocks >= 0 and an odd kernel >= 1")
    return blocks, kernel


def train_resnet(train: list, channels: int, blocks: int, steps: int, seed: int = 0,
                 kernel: int = 3) -> torch.nn.Module:
    """The residual CNN prox (z = x + f(x)) trained by Adam (lr 1e-3, batches of 8 images) on denoising pairs."""
    from mrirecon.models import build_prox

    torch.manual_seed(seed)
    net = build_prox({"name": "resnet", "channels": channels, "num_blocks": blocks, "kernel_size": kernel}, 2, 2)
    X = torch.cat([i for i, _ in train]).float()
    T = torch.cat([c.expand(len(i), -1, -1, -1) for i, c in train]).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(X), (8,), generator=g)
        loss = (net(X[idx]) - T[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="knee2d")
    p.add_argument("--config", help="fit config for the data (default configs/convex/<kind>_fit.yaml)")
    p.add_argument("--weights", nargs="+", required=True, help="convex_dual weights files")
    p.add_argument("--resnet-steps", type=int, default=400, help="Adam steps of the standalone resnet (0: none)")
    p.add_argument("--resnet-channels", type=int, default=36)
    p.add_argument("--resnet-shapes", nargs="+", type=parse_resnet_shape, default=[(1, 3)],
                   help="resnets to train, BLOCKSxKERNEL each (default 1x3: 9x9 receptive field; 0x3: a linear "
                        "5x5 filter, the convex 5x5 fit's receptive field)")
    p.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS),
                   help="inputs the resnets are trained on")
    p.add_argument("--unrolls", type=int, default=4)
    p.add_argument("--out", help="output stem (default results/convex/<kind>_denoise)")
    args = p.parse_args(argv)
    from mrirecon.models.convex.fit import held_out_psnr_gain, read_fit_config
    from mrirecon.models.convex.prox import ConvexDualProx

    torch.set_grad_enabled(False)
    load_before = load_average()
    cfg, settings = read_fit_config(ROOT / (args.config or f"configs/convex/{args.kind}_fit.yaml"), [])
    data = {(split, kind): pairs(cfg, settings, split, kind) for split in ("train", "val") for kind in INPUTS}
    rows = []

    def score(name: str, net, predicts: str, prox, info: dict) -> None:
        row = {"prox": name, **info}
        for (split, kind), ps in data.items():
            row[f"{split}_{kind}_db"] = held_out_psnr_gain(net, predicts, ps)
        row["val_in_unroll_db"] = in_unroll_gains(prox, cfg, "val", args.unrolls, 1.0)
        rows.append(row)
        print(name, {k: v for k, v in row.items() if k.endswith("_db")}, flush=True)

    for w in args.weights:
        prox = ConvexDualProx(2, weights=w)
        info, st = prox.info, prox.info.get("settings", {})
        desc = {"file": w, "kernel_size": st.get("kernel_size"), "gates": st.get("num_gates"),
                "hidden": info.get("hidden"), "fit_input": st.get("input"), "patches": info.get("data", {}).get("patches"),
                "lam_fraction": (info["lam"] / info["lam_max"]) if info.get("lam_max") else None,
                "gap": info.get("gap"), "parameters": sum(q.numel() for q in prox.parameters())}
        lam = (f"{desc['lam_fraction']:.3g} lam_max" if desc["lam_fraction"] is not None
               else f"{info.get('lam', st.get('lam')):.3g}")
        score(f"convex {st.get('kernel_size')}x{st.get('kernel_size')} ({st.get('program', 'relu')}), "
              f"{info.get('hidden')} units, fitted on {st.get('input')}, lam {lam}", prox.net, prox.predicts, prox, desc)
    for blocks, kernel in args.resnet_shapes if args.resnet_steps else []:
        for kind in args.inputs:
            t0 = time.perf_counter()
            with torch.enable_grad():
                net = train_resnet(data[("train", kind)], args.resnet_channels, blocks, args.resnet_steps,
                                   kernel=kernel)
            rf = receptive_field(blocks, kernel)
            desc = {"fit_input": kind, "steps": args.resnet_steps, "train_seconds": round(time.perf_counter() - t0, 1),
                    "parameters": sum(q.numel() for q in net.parameters()), "blocks": blocks, "kernel_size": kernel,
                    "receptive_field": rf}
            shape = (f"{blocks} block{'s' if blocks != 1 else ''}, {kernel}x{kernel} convs" if blocks
                     else f"no block: linear, {kernel}x{kernel} convs")
            # build_prox's resnet is already residual: its output is the image
            score(f"resnet ({args.resnet_channels} ch, {shape}; receptive field {rf}x{rf}), Adam on {kind}",
                  net, "image", net, desc)
    out = ROOT / (args.out or f"results/convex/{args.kind}_denoise")
    result = {"meta": {"command": command_line(argv), "date": now_utc(), "machine": machine_info("cpu"),
                       "load_average_before": load_before, "load_average_after": load_average()},
              "kind": args.kind, "rows": rows}
    write_json(out.with_suffix(".json"), result)
    lines = [f"# The convex prox as a denoiser alone (synthetic {args.kind})", "",
             f"Command: `{result['meta']['command']}`  ", f"Date: {result['meta']['date']}  ",
             f"Machine: {result['meta']['machine']['cpu']}, load average {load_before} before, "
             f"{result['meta']['load_average_after']} after (shared with other people's jobs)", "",
             "Gain = 10 log10(MSE(input) / MSE(prox(input))) against the target, over every pixel of the split "
             "(> 0: the prox improves its inputs). unroll = the 4 PGD data-consistency iterates with identity proxes; "
             f"in-unroll = the prox's own inputs inside a {args.unrolls}-unroll PGD network (step 1) built from "
             "it, per unroll. train = the slices fits were made on; val = held out.", "",
             "| prox | params | train: zero-filled | train: unroll | val: zero-filled | val: unroll | "
             "val: in-unroll, per unroll |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['prox']} | {r['parameters']} | {r['train_zero_filled_db']:+.3f} | {r['train_unroll_db']:+.3f} | "
                     f"{r['val_zero_filled_db']:+.3f} | {r['val_unroll_db']:+.3f} | "
                     f"{' / '.join(f'{g:+.2f}' for g in r['val_in_unroll_db'])} |")
    write_markdown(out.with_suffix(".md"), "\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
