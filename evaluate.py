"""Evaluate a trained network or a classical baseline with fastMRI's metrics.

    python evaluate.py --checkpoint CKPT --data DIR --out OUT
    python evaluate.py --method {zero_filled,sense,cs} --config configs/knee2d.yaml --data DIR --out OUT

DIR is a split folder (or a dataset root, meaning its test/ split). Masks are fixed per file
(seeded from the file name), so every method is scored on the same undersampled data. Writes
fastMRI prediction files, OUT/metrics.json, OUT/per_volume.csv and figures under OUT/figures.
"""
from __future__ import annotations

import argparse
import json
import sys

from mrirecon.config import ConfigError, load_config
from mrirecon.data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="trained network checkpoint (.ckpt)")
    src.add_argument("--method", choices=("zero_filled", "sense", "cs"), help="classical baseline")
    p.add_argument("--config", help="experiment YAML (baselines: data kind and mask; default: the checkpoint's)")
    p.add_argument("--data", required=True, help="split folder of .h5 files, or a root with test/")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-unrolls", type=int, default=None, help="stop after k unrolls (GLEAM anytime)")
    p.add_argument("--figures", type=int, default=2, help="number of volumes to draw")
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.mask.accelerations=[8]")
    a = p.parse_args(argv)
    try:
        from mrirecon.evaluation.runner import evaluate

        if a.checkpoint:
            from mrirecon.training.module import load_module

            module = load_module(a.checkpoint)
            cfg = load_config(a.config, a.overrides, base=module.cfg.to_dict())
            result = evaluate(cfg, a.data, a.out, module=module, num_unrolls=a.num_unrolls,
                              num_figures=a.figures, device=a.device, extra={"checkpoint": a.checkpoint})
        else:
            if not a.config:
                raise ConfigError("--method needs --config (data kind and mask), e.g. configs/knee2d.yaml")
            cfg = load_config(a.config, a.overrides)
            result = evaluate(cfg, a.data, a.out, method=a.method, num_figures=a.figures)
    except (ConfigError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("psnr", "ssim", "nmse", "seconds_per_slice")}, indent=1))
    print(f"predictions and metrics written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
