"""Score a trained network or a classical baseline on a data folder (what `evaluate.py` runs).

Writes, under OUT: one fastMRI prediction file per input volume (same name, dataset
`reconstruction`, float32 (slices, H, W); cine frames are stacked as slices), metrics.json,
per_volume.csv and a PNG figure per volume (the first few).

OUT is never a folder that holds input data: an OUT equal to, inside or containing the data folder or
another split of its dataset is refused (predictions carry the input files' names). An evaluation is
written into a new folder beside OUT (OUT.partial-XXXX, locked against a second evaluation into OUT)
and takes OUT's place only when complete, so OUT always holds one whole evaluation (the previous one
until then); files a user put into an earlier evaluation's OUT are carried over. A failed or stopped
evaluation removes its partial folder and leaves OUT as it was (a killed one leaves OUT.partial-XXXX,
which the next evaluation into OUT removes). Every prediction file records
what made it as HDF5 attributes: method, acceleration, the resolved config (YAML) and, for a
network, the checkpoint's path and sha256.

Reference (`data.target`, named in metrics.json and in each prediction file): "rss", fastMRI's
`reconstruction_rss` read from each file, scored exactly as fastMRI's evaluator does, or "sense", the
SENSE image of the fully sampled k-space (`REFERENCES`, `PREDICTIONS` say what each prediction is).
Files without a reference (fastMRI test/challenge files) are reconstructed with their own mask and
written as predictions only (OUT/reconstructions.json when no file has a reference).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic import LOCK_NAME, path_lock, write_text
from ..config import Config, ConfigError
from ..data.build import batch_transform, build_dataset
from ..data.transforms import EpochTagged
from ..data.errors import DataError
from ..data.kinds import get_kind
from ..data.layouts import KSPACE, PREDICTION
from ..numerics import flush_denormals
from ..physics import SenseOp
from .baselines import classical_prediction
from .cine import challenge_metrics, frame_rows, save_cine_outputs, write_frame_csv
from .equivariance import equivariance_errors
from .figures import save_cine_figure, save_comparison_grid
from .metrics import evaluate_volume, summarize
from .predictions import write_metrics, write_reconstruction
from .volumes import VolumeAccumulator, volume_reference


def resolve_split(data: str | Path) -> Path:
    """A split folder itself, or a dataset root whose test/ split is meant."""
    data = Path(data)
    if (data / "test").is_dir() and not any(data.glob("*.h5")):
        return data / "test"
    if not data.is_dir():
        raise DataError(data, "data folder does not exist")
    return data  # its kind's reader names anything else wrong with it (an empty folder, another layout)


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


MANIFEST = ".mrirecon-outputs.json"  # files the evaluation wrote into OUT (relative paths)
SPLITS = ("train", "val", "test")


def _inside(a: Path, b: Path) -> bool:
    """a is b or inside b (resolved paths)."""
    return a == b or b in a.parents


def data_folders(split_dir: Path) -> list[Path]:
    """The folders that hold the input data: the split read and, when it is a split of a dataset root
    (ROOT/{train,val,test}), every split of that dataset."""
    split_dir = split_dir.resolve()
    folders = [split_dir]
    if split_dir.name in SPLITS:
        folders += [split_dir.parent / s for s in SPLITS if (split_dir.parent / s).is_dir() and s != split_dir.name]
    return folders


def check_out(out: Path, split_dir: Path) -> None:
    """Refuse an output folder that is a file, or that is, lies inside or contains a folder of input data
    (the message names both paths), or an existing folder of other files that no evaluation wrote."""
    existing = next((q for q in (out, *out.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out: {existing} is a file, not a folder")
    target = out.resolve()
    for folder in data_folders(split_dir):
        if _inside(target, folder) or _inside(folder, target):
            how = ("is the data folder" if target == folder else
                   "is inside the data folder" if _inside(target, folder) else "contains the data folder")
            raise ConfigError(f"--out: {out} {how} {folder} (input data is only read: predictions carry the input "
                              "files' names and would overwrite or mix with them); choose a folder outside the dataset")
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()) and not _is_evaluation(out):
        inputs = [p for p in out.glob("*.h5") if not _is_prediction_file(p)]
        what = f"input data ({inputs[0].name})" if inputs else "files that no evaluation wrote"
        raise ConfigError(f"--out: {out} holds {what}; choose a new or empty folder, or an earlier "
                          "evaluation's folder")


def _is_evaluation(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (MANIFEST, "metrics.json", "reconstructions.json"))


def check_device(device: str) -> "torch.device":
    """The torch device for --device, with a ConfigError naming the flag for one that does not exist here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device {device!r}: not a device (cpu, cuda, cuda:N, mps): "
                          f"{str(e).splitlines()[0]}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is available (torch.cuda.is_available() is False)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: MPS is not available on this machine")
    return dev


def _is_prediction_file(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return PREDICTION in f and KSPACE not in f
    except OSError:
        return False


def _ours(out: Path) -> set[str]:
    """Files of `out` (relative paths) written by the evaluation that made it."""
    ours: set[str] = set()
    if (out / MANIFEST).is_file():
        try:
            ours = set(json.loads((out / MANIFEST).read_text()))
        except (ValueError, TypeError):
            ours = set()
    return ours | {p.name for p in out.glob("*.h5") if _is_prediction_file(p)} | {MANIFEST, LOCK_NAME}


def _carry_over(old: Path, new: Path) -> None:
    """Files a user put into an earlier evaluation's folder move into the new one (linked, or copied);
    the earlier evaluation's own files do not."""
    ours = _ours(old)
    for path in sorted(old.rglob("*")):
        rel = path.relative_to(old)
        if not path.is_file() or str(rel) in ours or (new / rel).exists():
            continue
        (new / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, new / rel)
        except OSError:
            shutil.copy2(path, new / rel)


def _switch(partial: Path, out: Path) -> None:
    """Put the complete evaluation in `partial` in place of `out` (the previous one is removed after)."""
    if out.exists():
        _carry_over(out, partial)
        old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)


def _remove_stale_partials(out: Path) -> None:
    """Partial folders of evaluations into `out` that were killed (we hold the lock: none is running)."""
    for stale in out.parent.glob(f"{out.name}.partial-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    for stale in out.parent.glob(f"{out.name}.old-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def evaluate(cfg: Config, data: str | Path, out: str | Path, method: str = "network", module=None,
             num_unrolls: int | None = None, num_figures: int = 2, baseline_params: dict | None = None,
             device: str = "cpu", extra: dict | None = None, progress: bool = True,
             tune: bool = True) -> dict[str, Any]:
    """Reconstruct every volume under `data`, write predictions/metrics/figures to `out` (locked while
    writing; outputs of an earlier run into `out` are replaced). `progress`: a progress bar on a terminal.
    A classical method without `baseline_params` has them chosen on the val/ split beside `data` when
    there is one and `tune` (`tuning.tune_baseline`); metrics.json records the values used and the search."""
    flush_denormals()  # a trained network's subnormal values take the CPU's slow path (numerics.py)
    split_dir = resolve_split(data)
    out = Path(out)
    check_out(out, split_dir)
    if method == "network":
        check_device(device)
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
    made_parent = not out.parent.exists()
    try:
        with path_lock(out):
            _remove_stale_partials(out)
            partial = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
            try:
                result = _evaluate(cfg, split_dir, partial, method, module, num_unrolls, num_figures,
                                   baseline_params, device, extra, progress, final=out)
                _switch(partial, out)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    except BaseException:
        if made_parent:  # an evaluation that failed leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.parent.rmdir()
        raise
    return result


def _evaluate(cfg: Config, split_dir: Path, out: Path, method: str, module, num_unrolls: int | None,
              num_figures: int, baseline_params: dict | None, device: str, extra: dict | None,
              progress: bool, final: Path | None = None) -> dict[str, Any]:
    """Write the evaluation into `out`; paths recorded in the reports name `final`, where it will be."""
    final = out if final is None else final
    expected_by = f"the checkpoint {extra['checkpoint']}" if extra and extra.get("checkpoint") else "data.kind"
    ds = build_dataset(cfg, split_dir, progress, expected_by=expected_by)
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
    prepare, here = batch_transform(cfg), device if method == "network" else "cpu"  # classical methods: numpy
    # disable=None: the bar shows on a terminal only (not in logs or pipes); progress=False hides it.
    for loaded in tqdm(DataLoader(EpochTagged(ds, ds.transform), batch_size=1), desc=f"evaluate {method}",
                       unit="item", disable=None if progress else True):
        batch = prepare(loaded, device=here)  # the batch transform training and validation use
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
    kind = get_kind(cfg.data.kind)
    crop = kind.eval_crop
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
        if kind.frames:  # the CMRxRecon challenge's scores and per-frame rows (evaluation/cine.py)
            rows[-1].update(challenge_metrics(target, recon))
            per_frame.extend(frame_rows(fname, target, recon))
        if len(figures) < num_figures:
            png = out / "figures" / f"{Path(fname).stem}.png"
            zf = vol.images["zero_filled"]
            if kind.frames:
                save_cine_figure(png, target[0], zf[0], recon[0])
                # x-t profile through the heart, error maps and a GIF of the middle slice (issue 12)
                written.extend(save_cine_outputs(out / "figures", Path(fname).stem, target, zf, recon))
            else:
                n = target.shape[0]
                slices = sorted({n // 4, n // 2, (3 * n) // 4}) if n >= 3 else list(range(n))
                save_comparison_grid(png, target, zf, recon, slices=slices, crop=crop)
            figures.append(str(final / png.relative_to(out)))
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
        _write_manifest(out, written)
        return report
    summary = summarize(rows)
    written.extend(write_metrics(out, rows, summary, extra=info))
    if per_frame:
        written.append(write_frame_csv(out, per_frame))
    _write_manifest(out, written)
    return {**summary, **info}


def _write_manifest(out: Path, written: list[Path]) -> None:
    """Record which files of OUT the evaluation wrote (a later one tells them from a user's files)."""
    write_text(out / MANIFEST, json.dumps(sorted(str(p.relative_to(out)) for p in written), indent=1) + "\n")
