"""Cine (2D+t) evaluation: per-frame and per-volume metrics in two conventions, x-t profiles, error maps,
a movie, and L1 compressed sensing with temporal sparsity.

Metrics. Magnitude cines (slices, frames, H, W):
- fastMRI convention (`mrirecon.evaluation.metrics`): a file is a volume whose 2D images are its
  (slice, frame) pairs; data_range = max of the target volume; PSNR and NMSE over the volume, SSIM the mean
  over images. Per frame: the same definitions on each (slice, frame) image, data_range still the volume's.
- CMRxRecon convention (the challenge's `Evaluation/Evaluation.py`, CmrxRecon/CMRxRecon): every 2D image is
  scored on its own after dividing target AND prediction by their own maxima (so a global intensity error
  costs nothing), data_range 1, skimage's PSNR / SSIM (7x7 uniform window, the same SSIM as fastMRI's) and
  NMSE; a file's score is the mean over its images, the dataset's the mean over files. Where they differ:
  per-image vs per-volume PSNR/NMSE, per-image vs per-volume data range, and the max normalisation of the
  prediction. (The challenge's ranking also crops the images; that crop is not reproduced here.)

Figures (written atomically): an x-t profile through the heart (the central image row whose intensity varies
most over time, i.e. crosses the beating heart, unless a row is given), error maps |recon - target| of one frame,
and an animated GIF of reference | zero-filled | reconstruction side by side.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path
from .figures import magnitude_stack
from .metrics import evaluate_volume, nmse, psnr, ssim


def _cine(x: np.ndarray, name: str) -> np.ndarray:
    """(slices, frames, H, W) float64 magnitudes from (frames, H, W) or (slices, frames, H, W)."""
    return magnitude_stack(x, name, "slices, frames, H, W")


def _pair(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = _cine(target, "target"), _cine(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"target and prediction shapes differ: {t.shape} vs {p.shape}")
    return t, p


def per_frame_metrics(target: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """fastMRI-style PSNR / SSIM / NMSE of every (slice, frame) image, data_range = the volume's max;
    arrays of shape (slices, frames)."""
    t, p = _pair(target, pred)
    data_range = float(t.max())
    out = {k: np.zeros(t.shape[:2]) for k in ("psnr", "ssim", "nmse")}
    for s in range(t.shape[0]):
        for f in range(t.shape[1]):
            ti, pi = t[s, f][None], p[s, f][None]
            out["psnr"][s, f] = float(psnr(ti, pi, data_range))
            out["ssim"][s, f] = float(ssim(ti, pi, data_range))
            out["nmse"][s, f] = float(nmse(ti, pi))
    return out


def frame_rows(fname: str, target: np.ndarray, pred: np.ndarray) -> list[dict]:
    """One row per (slice, frame) of a cine file: fname, slice, frame, fastMRI-style psnr / ssim / nmse."""
    per = per_frame_metrics(target, pred)
    return [{"fname": fname, "slice": s, "frame": f, **{k: float(per[k][s, f]) for k in ("psnr", "ssim", "nmse")}}
            for s in range(per["psnr"].shape[0]) for f in range(per["psnr"].shape[1])]


def write_frame_csv(out_dir: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """OUT/per_frame.csv (atomically): the rows of `frame_rows` for every file."""
    from ..atomic import write_text

    lines = ["fname,slice,frame,psnr,ssim,nmse"]
    lines += [f"{r['fname']},{r['slice']},{r['frame']},{r['psnr']:.6g},{r['ssim']:.6g},{r['nmse']:.6g}" for r in rows]
    path = Path(out_dir) / "per_frame.csv"
    write_text(path, "\n".join(lines) + "\n")
    return path


def volume_metrics(target: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fastMRI-style metrics of a whole cine file (its (slice, frame) images scored as slices)."""
    t, p = _pair(target, pred)
    return dict(evaluate_volume(t.reshape(-1, *t.shape[-2:]), p.reshape(-1, *p.shape[-2:]), crop=False))


def challenge_metrics(target: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """CMRxRecon's score of one file: mean over its 2D images of PSNR / SSIM / NMSE, each image divided
    by its own maximum (target and prediction separately), data_range 1."""
    t, p = _pair(target, pred)
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "nmse": []}
    for ti, pi in zip(t.reshape(-1, *t.shape[-2:]), p.reshape(-1, *p.shape[-2:])):
        ti, pi = ti / max(float(ti.max()), 1e-30), pi / max(float(pi.max()), 1e-30)
        scores["psnr"].append(float(psnr(ti[None], pi[None], 1.0)))
        scores["ssim"].append(float(ssim(ti[None], pi[None], 1.0)))
        scores["nmse"].append(float(nmse(ti[None], pi[None])))
    return {f"challenge_{k}": float(np.mean(v)) for k, v in scores.items()}


def heart_row(target: np.ndarray) -> int:
    """The image row (y) whose intensity varies most over time, within the central half of the rows (a
    cardiac field of view centres the heart; edge rows only flicker with noise): through the beating heart."""
    t = _cine(target, "target")[0]  # (frames, H, W)
    h = t.shape[1]
    lo, hi = h // 4, max(h - h // 4, h // 4 + 1)
    return lo + int(np.argmax(t[:, lo:hi].std(axis=0).sum(axis=1)))


def xt_profile(cine: np.ndarray, row: int) -> np.ndarray:
    """(frames, W) intensity along image row `row` over time (x to the right, time down)."""
    c = _cine(cine, "cine")[0]
    if not -c.shape[1] <= row < c.shape[1]:
        raise ValueError(f"row {row} outside an image of height {c.shape[1]}")
    return c[:, row, :]


def save_cine_panels(path: str | os.PathLike, target: np.ndarray, zero_filled: np.ndarray, recon: np.ndarray,
                     frame: int | None = None, row: int | None = None) -> Path:
    """PNG, two rows for one slice (frames, H, W): frame `frame` (default the middle one) of reference,
    zero-filled and reconstruction with the profile row marked, then the x-t profiles along that row and
    the error maps |zero-filled - reference| and |recon - reference| on one colour scale."""
    from matplotlib.figure import Figure

    t, z, r = (_cine(x, n)[0] for x, n in ((target, "target"), (zero_filled, "zero_filled"), (recon, "recon")))
    if not t.shape == z.shape == r.shape:
        raise ValueError(f"target {t.shape}, zero_filled {z.shape} and recon {r.shape} must have one shape")
    n_t = t.shape[0]
    frame = n_t // 2 if frame is None else frame
    if not -n_t <= frame < n_t:
        raise ValueError(f"frame {frame} invalid for a cine of {n_t} frames")
    row = heart_row(t) if row is None else row
    xt = [xt_profile(v, row) for v in (t, z, r)]  # validates the row
    vmax = float(t.max()) or 1.0
    emax = float(max(np.abs(z[frame] - t[frame]).max(), np.abs(r[frame] - t[frame]).max())) or 1.0
    fig = Figure(figsize=(10, 6), dpi=100)
    fig.patch.set_facecolor("white")
    axes = fig.subplots(2, 5)
    for ax in axes.flat:
        ax.set_axis_off()
    names = ("Reference", "Zero-filled", "Reconstruction")
    for c, (img, name) in enumerate(zip((t, z, r), names)):
        axes[0, c].imshow(img[frame], cmap="gray", vmin=0, vmax=vmax)
        axes[0, c].axhline(row, color="tab:orange", linestyle="--", linewidth=0.7)
        axes[0, c].set_title(f"{name}, frame {frame}", fontsize=8)
        axes[1, c].imshow(xt[c], cmap="gray", vmin=0, vmax=vmax, aspect="auto")
        axes[1, c].set_title(f"x-t at y = {row}", fontsize=8)
    for c, (img, name) in enumerate(((z, "zero-filled"), (r, "recon")), start=3):
        im = axes[0, c].imshow(np.abs(img[frame] - t[frame]), cmap="inferno", vmin=0, vmax=emax)
        axes[0, c].set_title(f"|{name} - ref| (0..{emax:.3g})", fontsize=8)
        axes[1, c].imshow(np.abs(xt[c - 2] - xt[0]), cmap="inferno", vmin=0, vmax=emax, aspect="auto")
        axes[1, c].set_title(f"x-t error, {name}", fontsize=8)
    fig.colorbar(im, cax=fig.add_axes((0.92, 0.3, 0.012, 0.4)))  # its own axis: the panels keep their size
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def movie_frames(target: np.ndarray, zero_filled: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """(frames, H, 3 W + 2 gap) uint8: reference | zero-filled | reconstruction, windowed [0, target max]."""
    t, z, r = (_cine(x, n)[0] for x, n in ((target, "target"), (zero_filled, "zero_filled"), (recon, "recon")))
    if not t.shape == z.shape == r.shape:
        raise ValueError(f"target {t.shape}, zero_filled {z.shape} and recon {r.shape} must have one shape")
    vmax = float(t.max()) or 1.0
    gap = np.full((t.shape[0], t.shape[1], 2), 255.0)
    side = np.concatenate([t / vmax * 255, gap, z / vmax * 255, gap, r / vmax * 255], axis=2)
    return np.clip(np.rint(side), 0, 255).astype(np.uint8)


def save_cine_gif(path: str | os.PathLike, target: np.ndarray, zero_filled: np.ndarray, recon: np.ndarray,
                  frame_ms: float = 60.0, scale: int = 2) -> Path:
    """Animated GIF (looping) of one slice: reference | zero-filled | reconstruction; written atomically."""
    from PIL import Image

    frames = movie_frames(target, zero_filled, recon)
    images = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(frame_ms), loop=0)
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return path


def save_cine_outputs(folder: str | os.PathLike, stem: str, target: np.ndarray, zero_filled: np.ndarray,
                      recon: np.ndarray) -> list[Path]:
    """The x-t / error-map PNG and the GIF of the middle slice of a cine file (slices, frames, H, W)."""
    t, z, r = (_cine(x, n) for x, n in ((target, "target"), (zero_filled, "zero_filled"), (recon, "recon")))
    s = t.shape[0] // 2
    folder = Path(folder)
    return [save_cine_panels(folder / f"{stem}_xt.png", t[s], z[s], r[s]),
            save_cine_gif(folder / f"{stem}.gif", t[s], z[s], r[s])]
