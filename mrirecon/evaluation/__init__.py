"""Evaluation: fastMRI metrics, prediction files and reports, figures, classical baselines.

Names are imported on first use, so that `from mrirecon.evaluation.metrics import SSIMLoss` in training
code does not pull in sigpy and matplotlib.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "METHODS": "baselines",
    "reconstruct": "baselines",
    "save_cine_figure": "figures",
    "save_comparison_grid": "figures",
    "SSIMLoss": "metrics",
    "VolumeMetrics": "metrics",
    "center_crop": "metrics",
    "evaluate_volume": "metrics",
    "nmse": "metrics",
    "psnr": "metrics",
    "ssim": "metrics",
    "summarize": "metrics",
    "read_reconstruction": "predictions",
    "write_metrics": "predictions",
    "write_reconstruction": "predictions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
