"""Fair classical baselines: their settings are chosen on the validation split, never on the test split.

A small grid per method (weights relative to the data, see `baselines`), scored on up to `max_items`
validation slices spread over the split, exactly as the test split is scored (same reference, same
prediction rule, fastMRI's metrics per volume, mean over volumes). The best mean SSIM wins (fastMRI's
headline metric; PSNR breaks ties). The grid, every score and the choice go into metrics.json.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Subset

from ..config import Config
from ..data.build import build_dataset
from ..data.kinds import get_kind
from .baselines import BASELINES, classical_prediction
from .metrics import evaluate_volume, summarize
from .volumes import VolumeAccumulator, volume_reference

# The settings searched per method: each baseline's `grid` (baselines.py).
GRIDS: dict[str, dict[str, list]] = {name: b.grid for name, b in BASELINES.items() if b.grid}


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def tune_baseline(cfg: Config, method: str, val_dir: str | Path, max_items: int = 8,
                  grid: dict[str, list] | None = None, progress: bool = False) -> dict[str, Any]:
    """Grid-search `method`'s settings on `val_dir`; returns {"params", "split", "metric", "grid", "scores"}."""
    grid = grid or GRIDS.get(method)
    if not grid:
        raise ValueError(f"no settings to tune for method {method!r} (tunable: {sorted(GRIDS)})")
    ds = build_dataset(cfg, Path(val_dir), progress)
    batches = [b for b in DataLoader(Subset(ds, spread(len(ds), max_items)), batch_size=1) if b.target.numel()]
    if not batches:
        raise ValueError(f"{val_dir}: no validation slice with a fully sampled reference to tune {method} on")
    paths = {fi.path.name: fi.path for fi in ds.files}
    crop = get_kind(cfg.data.kind).eval_crop
    scores = []
    for params in grid_points(grid):
        acc = VolumeAccumulator({fi.path.name: fi.recon_size for fi in ds.files})
        for b in batches:
            pred = classical_prediction(method, b, ds.geometry.fft_ndim, cfg.data.target, params)
            acc.add_batch(b, {"reconstruction": pred, "target": b.target})
        rows = [evaluate_volume(volume_reference(v, paths[f], cfg.data.target), v.images["reconstruction"], crop=crop)
                for f, v in acc.volumes().items()]
        s = summarize(rows)
        scores.append({"params": params, "ssim": s["ssim"]["mean"], "psnr": s["psnr"]["mean"]})
    best = max(scores, key=lambda r: (np.nan_to_num(r["ssim"], nan=-np.inf), np.nan_to_num(r["psnr"], nan=-np.inf)))
    return {"params": best["params"], "split": str(val_dir), "metric": "ssim (then psnr)",
            "num_slices": len(batches), "grid": grid, "scores": scores}


def validation_split(test_dir: Path) -> Path | None:
    """The val/ folder beside a test split folder (a dataset root's layout), if there is one."""
    val = Path(test_dir).parent / "val"
    return val if val.is_dir() and val.resolve() != Path(test_dir).resolve() and any(val.glob("*.h5")) else None
