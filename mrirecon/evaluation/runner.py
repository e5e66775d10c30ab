"""Score a trained network or a classical baseline on a data folder (what `evaluate.py` runs).

Writes, under OUT: one fastMRI prediction file per input volume (same name, dataset
`reconstruction`, float32 (slices, H, W); cine frames are stacked as slices), metrics.json,
per_volume.csv and a PNG figure per volume (the first few).

The output folder is locked while an evaluation writes it (a second one into the same folder is
refused), and a rerun replaces its outputs: prediction files and figures of an earlier run that this
run did not write again are removed, so OUT never mixes two runs. Every prediction file records
what made it as HDF5 attributes: method, acceleration, the resolved config (YAML) and, for a
network, the checkpoint's path and sha256.

Reference (`data.target`, named in metrics.json and in each prediction file): "rss", fastMRI's
`reconstruction_rss` read from each file, scored exactly as fastMRI's evaluator does, or "sense", the
SENSE image of the fully sampled k-space (`REFERENCES`, `PREDICTIONS` say what each prediction is).
Files without a reference (fastMRI test/challenge files) are reconstructed with their own mask and
written as predictions only (OUT/reconstructions.json when no file has a reference).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic import LOCK_NAME, folder_lock, write_text
from ..config import Config, ConfigError
from ..data.datasets import ReconDataset, list_h5
from ..data.layouts import KSPACE, PREDICTION, TARGET
from ..data.subsample import build_mask_func
from ..data.transforms import ReconTransform
from ..physics import SenseOp
from .baselines import reconstruct
from .cine import challenge_metrics, frame_rows, save_cine_outputs, write_frame_csv
from .equivariance import equivariance_errors
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
    from ..data.cmrxrecon import is_cmrxrecon_folder

    if is_cmrxrecon_folder(data):  # CMRxRecon cine layout: .mat files below (issue 12)
        return data
    list_h5(data)  # clear error for a missing or empty folder
    return data


def build_dataset(cfg: Config, split_dir: Path, progress: bool = True) -> ReconDataset:
    from ..data.coil_maps import cache_for

    d = cfg.data
    transform = ReconTransform(build_mask_func(d.mask), deterministic=True, seed=cfg.train.seed, maps=d.maps,
                               espirit={**d.espirit, "num_maps": cfg.model.num_maps}, target=d.target)
    return ReconDataset(split_dir, d.kind, transform=transform, volume=d.volume, acquisitions=d.acquisitions,
                        crop_readout=d.crop_readout, require_maps=d.maps == "file", num_maps=cfg.model.num_maps,
                        scan_values=d.scan_values, progress=progress, maps_cache=cache_for(d, cfg.model.num_maps),
                        maps_workers=max(1, d.num_workers))


# What metrics.json and every prediction file say the scores are measured against.
REFERENCES = {
    "rss": "reconstruction_rss: the RSS of the fully sampled coil images (fastMRI's evaluator; read from the "
           "file where it holds one)",
    "sense": "sense: the SENSE combination of the fully sampled k-space with the ESPIRiT maps (GLEAM, meddlr)",
}
PREDICTIONS = {
    "network": "magnitude (RSS over ESPIRiT maps) of the network's image, trained on the reference",
    "zero_filled": {"rss": "RSS of the zero-filled coil images (fastMRI's zero-filled baseline)",
                    "sense": "magnitude of the zero-filled SENSE image A^H y"},
    "classical": {"rss": "RSS of the coil images of the method's k-space S x with the acquired samples kept",
                  "sense": "magnitude of the method's SENSE image"},
}


def prediction_rule(method: str, target: str) -> str:
    if method == "network":
        return PREDICTIONS["network"]
    return PREDICTIONS["zero_filled" if method == "zero_filled" else "classical"][target]


def data_consistent_coils(x: torch.Tensor | None, maps: torch.Tensor, mask: torch.Tensor, kspace: torch.Tensor,
                          fft_ndim: int) -> torch.Tensor:
    """Coil images (B, C, *S) of k-space that keeps the acquired samples and takes F S x elsewhere
    (x None: zero elsewhere). Their RSS is how an image x of a classical method is put on fastMRI's
    reference, which keeps the noise floor outside the object that S x (cropped maps) sets to zero."""
    from ..physics import ifftc

    if x is not None:
        kspace = kspace + (1 - mask) * SenseOp(maps, torch.ones(1), fft_ndim)(x)
    return ifftc(kspace, ndim=fft_ndim)


def classical_prediction(method: str, batch, fft_ndim: int, target_kind: str, params: dict | None) -> torch.Tensor:
    """The image a classical method is scored on, (1, M or C, *S) complex (magnitude over dim 1): its SENSE
    image x (target sense), or the coil images of its data-consistent k-space (target rss, see
    `data_consistent_coils`; the zero-filled one is fastMRI's zero-filled baseline)."""
    if method == "zero_filled" and target_kind == "rss":
        return data_consistent_coils(None, batch.maps, batch.mask, batch.kspace, fft_ndim)
    x = reconstruct(method, batch.kspace[0].numpy(), batch.maps[0].numpy(), batch.mask[0].numpy(), fft_ndim,
                    **(params or {}))
    x = torch.from_numpy(x)[None].to(batch.kspace.dtype)
    if target_kind == "rss":
        return data_consistent_coils(x, batch.maps, batch.mask, batch.kspace, fft_ndim)
    return x


def volume_reference(vol, path: Path, target_kind: str) -> "np.ndarray | None":
    """What a volume is scored against: for target rss the file's own `reconstruction_rss` (fastMRI's
    reference, exactly) when the volume holds all its slices, else the transform's target magnitude;
    None for a file without a fully sampled reference. (`path` may be no HDF5 file, e.g. other readers.)"""
    target = vol.images.get("target")
    if target_kind == "rss" and target is not None and Path(path).is_file() and h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if TARGET in f and f[TARGET].shape == target.shape:
                return f[TARGET][()]
    return target


MANIFEST = ".mrirecon-outputs.json"  # files the last evaluation wrote into OUT (relative paths)


def _check_out(out: Path, split_dir: Path) -> None:
    existing = next((q for q in (out, *out.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out: {existing} is a file, not a folder")
    if out.resolve() == split_dir.resolve():
        raise ConfigError(f"--out: {out} is the data folder; predictions have the input files' names and "
                          "would overwrite them")


def _is_prediction_file(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return PREDICTION in f and KSPACE not in f
    except OSError:
        return False


def _replace_outputs(out: Path, written: list[Path]) -> None:
    """Remove what an earlier evaluation left in `out` that this one did not write again, then record ours."""
    manifest = out / MANIFEST
    old: set[str] = set()
    if manifest.is_file():
        try:
            old = set(json.loads(manifest.read_text()))
        except (ValueError, TypeError):
            old = set()
    old |= {p.name for p in out.glob("*.h5") if _is_prediction_file(p)}
    new = {str(p.relative_to(out)) for p in written}
    for rel in sorted(old - new):
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            continue  # only files inside OUT are ever removed
        path = out / rel
        if path.is_file() and path.name != LOCK_NAME and (path.suffix != ".h5" or _is_prediction_file(path)):
            path.unlink()
    write_text(manifest, json.dumps(sorted(new), indent=1) + "\n")


def evaluate(cfg: Config, data: str | Path, out: str | Path, method: str = "network", module=None,
             num_unrolls: int | None = None, num_figures: int = 2, baseline_params: dict | None = None,
             device: str = "cpu", extra: dict | None = None, progress: bool = True,
             tune: bool = True) -> dict[str, Any]:
    """Reconstruct every volume under `data`, write predictions/metrics/figures to `out` (locked while
    writing; outputs of an earlier run into `out` are replaced). `progress`: a progress bar on a terminal.
    A classical method without `baseline_params` has them chosen on the val/ split beside `data` when
    there is one and `tune` (`tuning.tune_baseline`); metrics.json records the values used and the search."""
    split_dir = resolve_split(data)
    out = Path(out)
    _check_out(out, split_dir)
    if method not in ("network", "zero_filled"):
        from .tuning import GRIDS, tune_baseline, validation_split

        tuning = None
        val = validation_split(split_dir) if tune and baseline_params is None and method in GRIDS else None
        if val is not None:
            tuning = tune_baseline(cfg, method, val, progress=progress)
            baseline_params = tuning["params"]
        extra = {**(extra or {}), "baseline_params": dict(baseline_params or {}),
                 "tuning": tuning or ("not tuned: settings given" if baseline_params else
                                      "not tuned: no val/ split beside the data (method defaults)")}
    with folder_lock(out):
        return _evaluate(cfg, split_dir, out, method, module, num_unrolls, num_figures, baseline_params, device,
                         extra, progress)


def _evaluate(cfg: Config, split_dir: Path, out: Path, method: str, module, num_unrolls: int | None,
              num_figures: int, baseline_params: dict | None, device: str, extra: dict | None,
              progress: bool) -> dict[str, Any]:
    ds = build_dataset(cfg, split_dir, progress)
    target_kind = cfg.data.target
    written: list[Path] = []
    provenance = {"config": yaml.safe_dump(cfg.to_dict(), sort_keys=False),
                  **{k: str(v) for k, v in (extra or {}).items() if k in ("checkpoint", "checkpoint_sha256")}}
    acc = VolumeAccumulator({fi.path.name: fi.recon_size for fi in ds.files})
    fft_ndim = ds.geometry.fft_ndim
    seconds = 0.0
    equivariance: dict[str, float] | None = None
    if module is not None:
        module = module.to(device).eval()
    # disable=None: the bar shows on a terminal only (not in logs or pipes); progress=False hides it.
    for batch in tqdm(DataLoader(ds, batch_size=1), desc=f"evaluate {method}", unit="item",
                      disable=None if progress else True):
        A = SenseOp(batch.maps, batch.mask, fft_ndim)
        zero_filled = A.H(batch.kspace)
        start = time.perf_counter()
        if method == "network":
            with torch.no_grad():
                b = [t.to(device) for t in (batch.kspace, batch.maps, batch.mask)]
                recon = module(*b, num_unrolls=num_unrolls).cpu()
        else:
            recon = classical_prediction(method, batch, fft_ndim, target_kind, baseline_params)
        seconds += time.perf_counter() - start
        if method == "network" and equivariance is None:  # the equivariant proxes' errors, on the first image
            equivariance = equivariance_errors(module.modules(), zero_filled.to(device))
        images = {"reconstruction": recon, "zero_filled": zero_filled}
        if batch.target.numel():
            images["target"] = batch.target
        acc.add_batch(batch, images)
    rows = []
    num_items = len(ds)
    crop = cfg.data.kind in ("knee2d", "brain2d")
    figures = []
    paths = {fi.path.name: fi.path for fi in ds.files}
    reference_name = REFERENCES[target_kind]
    rule = prediction_rule(method, target_kind)
    unscored = []
    per_frame: list[dict] = []
    for i, (fname, vol) in enumerate(acc.volumes().items()):
        recon = vol.images["reconstruction"].astype(np.float32)  # scored exactly as written
        pred = recon.reshape(-1, *recon.shape[-2:])  # cine frames stacked as slices (fastMRI format)
        written.append(write_reconstruction(out, fname, pred, extra_attrs={
            "method": method, "acceleration": vol.acceleration, "reference": target_kind, "prediction": rule,
            **provenance}))
        target = volume_reference(vol, paths[fname], target_kind)
        if target is None:
            unscored.append(fname)  # an undersampled file (fastMRI test/challenge): reconstructed only
            continue
        m = evaluate_volume(target, recon, crop=crop)
        rows.append(dict(fname=fname, **m, acceleration=vol.acceleration,
                         effective_acceleration=vol.effective_acceleration, num_slices=vol.num_items,
                         seconds_per_slice=seconds / max(num_items, 1)))
        if cfg.data.kind == "cine":  # the CMRxRecon challenge's scores and per-frame rows (evaluation/cine.py)
            rows[-1].update(challenge_metrics(target, recon))
            per_frame.extend(frame_rows(fname, target, recon))
        if len(figures) < num_figures:
            png = out / "figures" / f"{Path(fname).stem}.png"
            zf = vol.images["zero_filled"]
            if cfg.data.kind == "cine":
                save_cine_figure(png, target[0], zf[0], recon[0])
                # x-t profile through the heart, error maps and a GIF of the middle slice (issue 12)
                written.extend(save_cine_outputs(out / "figures", Path(fname).stem, target, zf, recon))
            else:
                n = target.shape[0]
                slices = sorted({n // 4, n // 2, (3 * n) // 4}) if n >= 3 else list(range(n))
                save_comparison_grid(png, target, zf, recon, slices=slices, crop=crop)
            figures.append(str(png))
            written.append(png)
    info = {"method": method, "data": str(split_dir), "reference": reference_name, "target": target_kind,
            "prediction": rule, "num_volumes": len(rows), "num_slices": num_items,
            "seconds_per_slice": seconds / max(num_items, 1), "figures": figures, **(equivariance or {}),
            **(extra or {})}
    if unscored:
        info["reconstructed_only"] = unscored
    if not rows:  # no file with a fully sampled reference: predictions only (fastMRI test/challenge data)
        report = {**info, "reference": None, "num_volumes": len(unscored)}
        written.append(write_text(out / "reconstructions.json", json.dumps(report, indent=2) + "\n"))
        _replace_outputs(out, written)
        return report
    summary = summarize(rows)
    written.extend(write_metrics(out, rows, summary, extra=info))
    if per_frame:
        written.append(write_frame_csv(out, per_frame))
    _replace_outputs(out, written)
    return {**summary, **info}
