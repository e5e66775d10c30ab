"""Figures a reader of a paper expects: target / zero-filled / reconstruction / error, and cine x-t profiles.

Images are grayscale magnitudes, windowed [0, max of the target] so that the columns of a row compare
directly; error maps get their own scale (stated in the title) and a colour map. Each figure has an exact
pixel size (panels of PANEL_INCHES * DPI pixels plus a title band per row). Files are written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot, no global backend change

from .metrics import crop_to_target, psnr, ssim
from ..atomic import atomic_path

PANEL_INCHES = 2.0   # width of one image panel
TITLE_INCHES = 0.4   # band above each row of panels for the titles
GAP = 0.03           # blank fraction of a panel's width on each side, so neighbouring images stay apart
DPI = 100
ERROR_CMAP = "inferno"  # error maps: their own scale, in colour so they are not mistaken for images


def magnitude_stack(x: np.ndarray, name: str, dims: str = "slices, H, W") -> np.ndarray:
    """Magnitudes (float64, or the real input as is) with every axis of `dims`; the leading one (slices)
    is added when the input lacks it. Errors name the input and the expected axes."""
    x = np.asarray(x)
    x = np.abs(x) if np.iscomplexobj(x) else x.astype(np.float64, copy=False)
    ndim = len(dims.split(","))
    if x.ndim == ndim - 1:
        x = x[None]
    if x.ndim != ndim:
        inner = dims.split(",", 1)[1].strip()
        raise ValueError(f"{name} must be ({dims}) or ({inner}), got shape {x.shape}")
    return x


def _magnitude_volume(x: np.ndarray, name: str) -> np.ndarray:
    return magnitude_stack(x, name)


def _aligned(target, zero_filled, recon, crop: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _magnitude_volume(target, "target")
    z = _magnitude_volume(zero_filled, "zero_filled")
    r = _magnitude_volume(recon, "recon")
    if crop:  # the evaluation crop, so the figure shows what the metrics score
        t0 = t
        t, z = crop_to_target(t0, z)
        _, r = crop_to_target(t0, r)
    if not t.shape == z.shape == r.shape:
        raise ValueError(f"target {t.shape}, zero_filled {z.shape} and recon {r.shape} must have one shape")
    return t, z, r


def _scores(t: np.ndarray, p: np.ndarray, data_range: float) -> str:
    """PSNR and SSIM of one image (H, W) or a stack of frames scored as slices (N, H, W)."""
    t3, p3 = (t[None], p[None]) if t.ndim == 2 else (t, p)
    return f"{float(psnr(t3, p3, data_range)):.2f} dB, SSIM {float(ssim(t3, p3, data_range)):.3f}"


def _new_figure(ncols: int, nrows: int, panel_aspect: float):
    """A figure whose pixel size is exact: ncols panels wide, nrows rows of (title band + panel) high."""
    row_h = PANEL_INCHES * panel_aspect + TITLE_INCHES
    fig = Figure(figsize=(ncols * PANEL_INCHES, nrows * row_h), dpi=DPI)
    fig.patch.set_facecolor("white")

    def axes(row: int, col: int):
        w, h = 1 / ncols, PANEL_INCHES * panel_aspect / (nrows * row_h)
        bottom = 1 - (row + 1) / nrows
        ax = fig.add_axes(((col + GAP) * w, bottom, (1 - 2 * GAP) * w, h))
        ax.set_axis_off()
        return ax

    return fig, axes


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def save_comparison_grid(
    path: str | os.PathLike,
    target: np.ndarray,
    zero_filled: np.ndarray,
    recon: np.ndarray,
    slices: Sequence[int] | None = None,
    titles: Sequence[str] = ("Target", "Zero-filled", "Reconstruction", "|Error|"),
    crop: bool = True,
) -> Path:
    """PNG grid: one row per slice; columns target, zero-filled, reconstruction, |recon - target|.

    Volumes are magnitudes (slices, H, W) (complex input is turned into magnitudes); `slices` defaults
    to the middle slice. PSNR/SSIM per slice (data range = target volume max, as in evaluation) appear
    in the titles. crop applies the evaluation crop (W, W), W = target width.
    """
    if len(titles) != 4:
        raise ValueError(f"titles must name the 4 columns, got {list(titles)}")
    t, z, r = _aligned(target, zero_filled, recon, crop)
    slices = [t.shape[0] // 2] if slices is None else list(slices)
    bad = [s for s in slices if not -t.shape[0] <= s < t.shape[0]]
    if not slices or bad:
        raise ValueError(f"slices {bad or slices} invalid for a volume of {t.shape[0]} slices")
    data_range = float(t.max())
    h, w = t.shape[-2:]
    fig, axes = _new_figure(4, len(slices), h / w)
    for row, s in enumerate(slices):
        vmax = float(t[s].max()) or 1.0  # one window per row, from the target
        err = np.abs(r[s] - t[s])
        emax = float(err.max()) or 1.0
        panels = [
            (t[s], "gray", vmax, f"{titles[0]} (slice {s})"),
            (z[s], "gray", vmax, f"{titles[1]}\n{_scores(t[s], z[s], data_range)}"),
            (r[s], "gray", vmax, f"{titles[2]}\n{_scores(t[s], r[s], data_range)}"),
            (err, ERROR_CMAP, emax, f"{titles[3]}\nscale 0 to {emax:.3g}"),
        ]
        for col, (img, cmap, top, title) in enumerate(panels):
            ax = axes(row, col)
            ax.imshow(img, cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest", aspect="auto")
            ax.set_title(title, fontsize=8, pad=2)
    return _save(fig, path)


def save_cine_figure(
    path: str | os.PathLike,
    target: np.ndarray,
    zero_filled: np.ndarray,
    recon: np.ndarray,
    frames: Sequence[int] | None = None,
    profile_col: int | None = None,
    titles: Sequence[str] = ("Target", "Zero-filled", "Reconstruction"),
) -> Path:
    """PNG: rows target, zero-filled, reconstruction; columns a few frames and a y-t profile.

    Inputs are (frames, H, W) magnitudes. The profile is image column `profile_col` (default the
    middle; drawn as a dashed line on the frames) over time: y down, time to the right, so temporal
    blurring and aliasing show as smeared or repeated edges. Windowing is [0, target max] for all panels;
    PSNR/SSIM of the whole cine (frames scored as slices) label each row.
    """
    t, z, r = _aligned(target, zero_filled, recon, crop=False)
    n_t, h, w = t.shape
    frames = sorted({0, n_t // 3, (2 * n_t) // 3}) if frames is None else list(frames)
    bad = [f for f in frames if not -n_t <= f < n_t]
    if not frames or bad:
        raise ValueError(f"frames {bad or frames} invalid for a cine of {n_t} frames")
    col = w // 2 if profile_col is None else profile_col
    if not -w <= col < w:
        raise ValueError(f"profile_col {col} outside an image of width {w}")
    col %= w
    vmax = float(t.max()) or 1.0
    fig, axes = _new_figure(len(frames) + 1, 3, h / w)
    for row, (vol, name) in enumerate(zip((t, z, r), titles)):
        label = name if vol is t else f"{name}: {_scores(t, vol, vmax)}"
        for c, f in enumerate(frames):
            ax = axes(row, c)
            ax.imshow(vol[f], cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="auto")
            ax.axvline(col, color="tab:orange", linestyle="--", linewidth=0.6, alpha=0.7)
            ax.set_title(f"{label}\nframe {f}" if c == 0 else f"frame {f}", fontsize=8, pad=2, loc="left" if c == 0 else "center")
        ax = axes(row, len(frames))
        ax.imshow(vol[:, :, col].T, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="auto")
        ax.set_title(f"y-t at x = {col}", fontsize=8, pad=2)
    return _save(fig, path)
