"""Score a trained network or a classical baseline on a data folder (what `evaluate.py` runs).

Writes, under OUT: one fastMRI prediction file per input volume (same name, dataset
`reconstruction`, float32 (slices, H, W); cine frames are stacked as slices), metrics.json,
per_volume.csv and a PNG figure per volume (the first few).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..data.datasets import ReconDataset, list_h5
from ..data.subsample import build_mask_func
from ..data.transforms import ReconTransform
from ..physics import SenseOp
from .baselines import reconstruct
from .figures import save_cine_figure, save_comparison_grid
from .metrics import evaluate_volume, summarize
from .predictions import write_metrics, write_reconstruction
from .volumes import VolumeAccumulator

BASELINES = ("zero_filled", "sense", "cs")


def resolve_split(data: str | Path) -> Path:
    """A split folder itself, or a dataset root whose test/ split is meant."""
    data = Path(data)
    if (data / "test").is_dir() and not any(data.glob("*.h5")):
        return data / "test"
    list_h5(data)  # clear error for a missing or empty folder
    return data


def build_dataset(cfg: Config, split_dir: Path) -> ReconDataset:
    d = cfg.data
    transform = ReconTransform(build_mask_func(d.mask), deterministic=True, seed=cfg.train.seed, maps=d.maps)
    return ReconDataset(split_dir, d.kind, transform=transform, volume=d.volume, acquisitions=d.acquisitions,
                        crop_readout=d.crop_readout, require_maps=d.maps == "file")


def evaluate(cfg: Config, data: str | Path, out: str | Path, method: str = "network", module=None,
             num_unrolls: int | None = None, num_figures: int = 2, baseline_params: dict | None = None,
             device: str = "cpu", extra: dict | None = None) -> dict[str, Any]:
    """Reconstruct every volume under `data`, write predictions/metrics/figures to `out`."""
    split_dir = resolve_split(data)
    ds = build_dataset(cfg, split_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    acc = VolumeAccumulator({fi.path.name: fi.recon_size for fi in ds.files})
    fft_ndim = ds.geometry.fft_ndim
    seconds = 0.0
    if module is not None:
        module = module.to(device).eval()
    for batch in DataLoader(ds, batch_size=1):
        if batch.target.numel() == 0:
            raise ValueError(f"{batch.fname[0]}: no fully sampled reference in the file, cannot score it")
        A = SenseOp(batch.maps, batch.mask, fft_ndim)
        zero_filled = A.H(batch.kspace)
        start = time.perf_counter()
        if method == "network":
            with torch.no_grad():
                b = [t.to(device) for t in (batch.kspace, batch.maps, batch.mask)]
                recon = module(*b, num_unrolls=num_unrolls).cpu()
        else:
            x = reconstruct(method, batch.kspace[0].numpy(), batch.maps[0].numpy(), batch.mask[0].numpy(),
                            fft_ndim, **(baseline_params or {}))
            recon = torch.from_numpy(x)[None]
        seconds += time.perf_counter() - start
        acc.add_batch(batch, {"reconstruction": recon, "target": batch.target, "zero_filled": zero_filled})
    rows = []
    num_items = len(ds)
    crop = cfg.data.kind in ("knee2d", "brain2d")
    figures = []
    for i, (fname, vol) in enumerate(acc.volumes().items()):
        recon, target = vol.images["reconstruction"], vol.images["target"]
        pred = recon.reshape(-1, *recon.shape[-2:])  # cine frames stacked as slices (fastMRI format)
        write_reconstruction(out, fname, pred, extra_attrs={"method": method, "acceleration": vol.acceleration})
        m = evaluate_volume(target, recon, crop=crop)
        rows.append(dict(fname=fname, **m, acceleration=vol.acceleration,
                         effective_acceleration=vol.effective_acceleration, num_slices=vol.num_items,
                         seconds_per_slice=seconds / max(num_items, 1)))
        if i < num_figures:
            png = out / "figures" / f"{Path(fname).stem}.png"
            zf = vol.images["zero_filled"]
            if cfg.data.kind == "cine":
                save_cine_figure(png, target[0], zf[0], recon[0])
            else:
                n = target.shape[0]
                slices = sorted({n // 4, n // 2, (3 * n) // 4}) if n >= 3 else list(range(n))
                save_comparison_grid(png, target, zf, recon, slices=slices, crop=crop)
            figures.append(str(png))
    summary = summarize(rows)
    info = {"method": method, "data": str(split_dir), "num_volumes": len(rows), "num_slices": num_items,
            "seconds_per_slice": seconds / max(num_items, 1), "figures": figures, **(extra or {})}
    write_metrics(out, rows, summary, extra=info)
    return {**summary, **info}
