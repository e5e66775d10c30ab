"""Prediction files (fastMRI format) and metric reports, all written atomically.

A prediction file has the input file's name and one dataset `reconstruction`, float32 (slices, H, W)
(cine: (slices, frames, H, W)); fastMRI's evaluate.py reads exactly that key from a file of the same name.
Reports: `metrics.json` (summary over volumes) and `per_volume.csv` (one row per volume).

metrics.json is always strict JSON: a non-finite number (a NaN reconstruction, an infinite PSNR) is
written as null, and the top-level entry "nonfinite" maps its dotted key to "nan", "inf" or "-inf"
(e.g. {"psnr.mean": "nan"}); the entry is absent when every number is finite.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from ..atomic import atomic_path, write_text
from ..data.errors import DataError
from ..data.layouts import PREDICTION
from .metrics import METRICS, summarize

# Leading columns of per_volume.csv; any other keys of the rows follow in first-seen order.
CSV_COLUMNS = ("fname", "psnr", "ssim", "nmse", "acceleration", "num_slices", "seconds_per_slice")


def write_reconstruction(
    out_dir: str | os.PathLike,
    fname: str | os.PathLike,
    recon: np.ndarray,
    extra_attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write OUT/fname with dataset `reconstruction` (float32 magnitudes) and optional file attributes.

    Only the file name of `fname` is used: a prediction has the name of the input file it reconstructs.
    """
    recon = np.asarray(recon)
    if np.iscomplexobj(recon):
        raise ValueError(f"reconstruction for {fname} is complex: fastMRI prediction files hold magnitudes")
    if recon.ndim not in (3, 4):
        raise ValueError(f"reconstruction for {fname} must be (slices, H, W) or (slices, frames, H, W), got {recon.shape}")
    path = Path(out_dir) / Path(fname).name
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(PREDICTION, data=recon.astype(np.float32, copy=False))
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = value
    return path


def read_reconstruction(path: str | os.PathLike) -> np.ndarray:
    """The `reconstruction` array of a prediction file."""
    try:
        with h5py.File(path, "r") as f:
            if PREDICTION not in f:
                raise DataError(path, f"no dataset {PREDICTION!r} (found {sorted(f.keys())})", key=PREDICTION)
            return f[PREDICTION][()]
    except OSError as e:
        raise DataError(path, f"cannot read prediction file: {e}") from e


def _json_key(value: Any) -> str:
    """Acceleration 4 / 4.0 / "4" -> "4"; fractional factors keep their decimals."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def by_acceleration(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """summarize() per acceleration factor, for rows that carry an `acceleration` value."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("acceleration") not in (None, ""):
            groups.setdefault(_json_key(row["acceleration"]), []).append(row)
    return {r: summarize(groups[r]) for r in sorted(groups, key=float)}


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (e.g. float32 timings, attrs read from HDF5) as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def finite_json(report: Mapping[str, Any]) -> tuple[dict, dict[str, str]]:
    """(copy of `report` with non-finite floats replaced by None, {dotted key: "nan"/"inf"/"-inf"})."""
    flagged: dict[str, str] = {}

    def clean(value: Any, key: str) -> Any:
        if isinstance(value, (np.generic, np.ndarray)):
            value = value.tolist()
        if isinstance(value, float) and not math.isfinite(value):
            flagged[key] = str(value)
            return None
        if isinstance(value, Mapping):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    return clean(report, ""), flagged


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    extra = [k for row in rows for k in row if k not in CSV_COLUMNS]
    fields = [c for c in CSV_COLUMNS if any(c in row for row in rows)] + list(dict.fromkeys(extra))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_metrics(
    out_dir: str | os.PathLike,
    per_volume_rows: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write OUT/metrics.json and OUT/per_volume.csv; returns their paths.

    metrics.json = summary ({"psnr": {"mean", "std"}, "ssim": ..., "nmse": ...}; computed from the rows
    when None), plus "by_acceleration": {R: summary} when rows carry `acceleration` (unless the summary
    has its own), plus the top-level entries of `extra` (e.g. timing, config).
    per_volume.csv: one row per volume (fname, psnr, ssim, nmse, acceleration, num_slices,
    seconds_per_slice, then any other keys).
    """
    if not per_volume_rows:
        raise ValueError("write_metrics() needs at least one volume row")
    report: dict[str, Any] = dict(summarize(per_volume_rows) if summary is None else summary)
    for name in METRICS:
        entry = report.get(name)
        if not isinstance(entry, Mapping) or not {"mean", "std"} <= set(entry):
            raise ValueError(f"summary[{name!r}] must be {{'mean': ..., 'std': ...}}, got {entry!r}")
    if "by_acceleration" not in report:
        groups = by_acceleration(per_volume_rows)
        if groups:
            report["by_acceleration"] = groups
    for key, value in (extra or {}).items():
        if key in report:
            raise ValueError(f"extra entry {key!r} would overwrite a metrics.json entry of the same name")
        report[key] = value

    out = Path(out_dir)
    json_path, csv_path = out / "metrics.json", out / "per_volume.csv"
    report, flagged = finite_json(report)
    if flagged:
        report["nonfinite"] = flagged
    write_text(json_path, json.dumps(report, indent=2, default=_json_default, allow_nan=False) + "\n")
    write_text(csv_path, _csv_text(per_volume_rows))
    return json_path, csv_path
