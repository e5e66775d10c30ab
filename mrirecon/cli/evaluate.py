"""Evaluate a trained network or a classical baseline with fastMRI's metrics.

    mrirecon evaluate --checkpoint CKPT --data DIR --out OUT
    mrirecon evaluate --method METHOD --config configs/knee2d.yaml --data DIR --out OUT

(`python evaluate.py ...` is the same command.)

DIR is a split folder (or a dataset root, meaning its test/ split). Masks are fixed per file
(seeded from the file name), so every method is scored on the same undersampled data. Writes
fastMRI prediction files, OUT/metrics.json, OUT/per_volume.csv and figures under OUT/figures.
Scores are against `reconstruction_rss` exactly as fastMRI's evaluator computes them (data.target=rss,
the default) or against the SENSE image (data.target=sense); metrics.json names the reference.
Files without a reference (fastMRI test/challenge files: undersampled `kspace` and their `mask`) are
reconstructed with their own mask and written as predictions only (OUT/reconstructions.json when no
file has a reference). Coil maps come from the maps cache (data.maps_cache), built there if missing;
the data folder is only read. CG-SENSE and CS settings are chosen on the val/ split beside DIR
(a small grid, mrirecon/evaluation/tuning.py) unless --no-tune; metrics.json records them.

Options and overrides may come in any order. OUT is locked while it is written (a second evaluation
into it is refused) and a rerun replaces the outputs of the previous one. Exit status: 0 done,
2 bad config, data, checkpoint or output folder (the message names it), 3 non-finite reconstructions
(metrics.json then holds null for those numbers and lists them under "nonfinite").
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..config import ConfigError, load_config
from ..data.errors import DataError
from ..evaluation.baselines import METHODS, check_method
from . import load_registries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mrirecon evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="trained network checkpoint (.ckpt)")
    src.add_argument("--method", choices=METHODS, help="classical baseline (sense_per_frame and cs_temporal: cine)")
    p.add_argument("--config", help="experiment YAML (baselines: data kind and mask; default: the checkpoint's)")
    p.add_argument("--data", required=True, help="split folder of .h5 files, or a root with test/")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num-unrolls", type=int, default=None, help="stop after k unrolls (GLEAM anytime)")
    p.add_argument("--figures", type=int, default=2, help="number of volumes to draw")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-tune", action="store_true",
                   help="baselines: keep the method's default settings instead of choosing them on the val/ split")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.mask.accelerations=[8]")
    a = p.parse_intermixed_args(argv)  # overrides before, between or after the options
    load_registries()
    import torch

    from ..atomic import FolderBusyError

    try:
        from ..evaluation.runner import evaluate

        if a.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {a.device}: no CUDA GPU is available (torch.cuda.is_available() is False)")
        if a.checkpoint:
            from ..training.checkpoints import file_sha256
            from ..training.module import load_module

            module = load_module(a.checkpoint)
            cfg = load_config(a.config, a.overrides, base=module.cfg.to_dict())
            made_by = {"checkpoint": str(Path(a.checkpoint).resolve()), "checkpoint_sha256": file_sha256(a.checkpoint)}
            result = evaluate(cfg, a.data, a.out, module=module, num_unrolls=a.num_unrolls, num_figures=a.figures,
                              device=a.device, extra=made_by, progress=not a.no_progress)
        else:
            if not a.config:
                raise ConfigError("--method needs --config (data kind and mask), e.g. configs/knee2d.yaml")
            cfg = load_config(a.config, a.overrides)
            check_method(a.method, cfg.data.kind)
            result = evaluate(cfg, a.data, a.out, method=a.method, num_figures=a.figures,
                              progress=not a.no_progress, tune=not a.no_tune)
    except (ConfigError, DataError, ValueError, FolderBusyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "psnr" not in result:  # only files without a reference (fastMRI test/challenge data)
        print(f"reconstructed {result['num_volumes']} volume(s) without a reference (their own masks); "
              f"predictions written to {a.out}")
        return 0
    scores = {k: result[k] for k in ("psnr", "ssim", "nmse", "seconds_per_slice")}
    print(json.dumps(scores, indent=1))
    print(f"predictions and metrics written to {a.out}")
    bad = [f"{k}.{s}" for k in ("psnr", "ssim", "nmse") for s, v in result[k].items() if not math.isfinite(v)]
    if bad:
        print(f"error: non-finite scores ({', '.join(bad)}): the reconstructions hold NaN/Inf values; "
              f"{a.out}/metrics.json records them as null under \"nonfinite\"", file=sys.stderr)
        return 3
    return 0

