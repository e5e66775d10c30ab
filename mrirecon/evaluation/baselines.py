"""Classical reconstructions of one sample (numpy/sigpy, CPU), the one registry of baselines (`BASELINES`):
zero-filled, CG-SENSE, L1-wavelet CS for every data kind; CG-SENSE per frame and x-f (temporal) L1 CS for
cine. `mrirecon evaluate --method NAME` runs any of them; `tuning.py` searches their `grid` on val/.

The SENSE operator is composed from sigpy linops, A = mask * F * sum_maps(maps * x), the same model as
:class:`mrirecon.physics.SenseOp` (centered orthonormal FFT over the last `fft_ndim` dims, so cine frames
(T, H, W) are not transformed in time). Shapes, without a batch dim:
    kspace (C, *S) complex (already masked), maps (M, C, *S) (spatial dims may be 1 and broadcast),
    mask broadcastable to kspace, image (M, *S).
Regularisation weights are relative, so one default serves any data scale:
    sense: lam * ||A||^2 bound (max over pixels of sum_{m,c} |maps|^2 times max mask^2; 1 for ESPIRiT maps);
    cs:    lam * max |A^H y| (peak of the zero-filled image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import sigpy as sp
import torch

from ..options import check_options
from ..physics import SenseOp, ifftc


def _check_shapes(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, fft_ndim: int) -> None:
    spatial = kspace.shape[1:]
    if not 1 <= fft_ndim <= len(spatial):
        raise ValueError(f"fft_ndim={fft_ndim} but kspace {kspace.shape} has {len(spatial)} spatial dims after coils")
    if maps.ndim != kspace.ndim + 1 or maps.shape[1] != kspace.shape[0]:
        raise ValueError(f"maps must be (M, C, *S) for kspace (C, *S) = {kspace.shape}, got {maps.shape}")
    try:
        if np.broadcast_shapes(maps.shape[2:], spatial) != spatial:
            raise ValueError
        if np.broadcast_shapes(mask.shape, kspace.shape) != kspace.shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"maps {maps.shape} and mask {mask.shape} must broadcast to kspace {kspace.shape} without enlarging it"
        ) from None


def sense_linop(maps: np.ndarray, mask: np.ndarray, spatial: tuple[int, ...], fft_ndim: int) -> sp.linop.Linop:
    """sigpy SENSE operator (M, *S) -> (C, *S): mask * FFT(last fft_ndim axes, centered, ortho) * coil sum."""
    m, c = maps.shape[:2]
    lift = sp.linop.Reshape((m, 1, *spatial), (m, *spatial))
    coils = sp.linop.Multiply(lift.oshape, maps)
    combine = sp.linop.Sum(coils.oshape, axes=(0,))
    fourier = sp.linop.FFT(combine.oshape, axes=tuple(range(-fft_ndim, 0)), center=True)
    sample = sp.linop.Multiply(fourier.oshape, mask)
    return sample * fourier * combine * coils * lift


def operator_norm_bound(maps: np.ndarray, mask: np.ndarray) -> float:
    """Upper bound on ||A||^2 = max eigenvalue of A^H A (Cauchy-Schwarz over maps, orthonormal FFT)."""
    energy = float((np.abs(maps) ** 2).sum(axis=(0, 1)).max())
    return energy * float(np.max(np.abs(mask)) ** 2)


def _zero_filled(A: sp.linop.Linop, y: np.ndarray, norm_bound: float, fft_ndim: int) -> np.ndarray:
    return A.H(y)


def _sense(A: sp.linop.Linop, y: np.ndarray, norm_bound: float, fft_ndim: int, lam: float = 1e-3, max_iter: int = 30,
           tol: float = 0.0) -> np.ndarray:
    """CG-SENSE (Pruessmann et al. 2001) with Tikhonov damping: (A^H A + lam I) x = A^H y."""
    app = sp.app.LinearLeastSquares(A, y, lamda=lam * norm_bound, max_iter=max_iter, tol=tol,
                                    solver="ConjugateGradient", show_pbar=False)
    return app.run()


def _cs(A: sp.linop.Linop, y: np.ndarray, norm_bound: float, fft_ndim: int, lam: float = 1e-3, max_iter: int = 100,
        wave_name: str = "db4", wavelet_axes: tuple[int, ...] | None = None) -> np.ndarray:
    """L1-wavelet CS (Lustig et al. 2007): min 1/2 ||A x - y||^2 + lam ||W x||_1 by FISTA, step 1/||A||^2.

    wavelet_axes: spatial axes of the image to transform (negative, counted from the end; default the
    Fourier-transformed axes, i.e. per frame for cine; pass (-3, -2, -1) for a spatio-temporal wavelet).
    """
    img_shape = A.ishape
    axes = tuple(range(-fft_ndim, 0)) if wavelet_axes is None else tuple(wavelet_axes)
    if any(not -(len(img_shape) - 1) <= a < 0 for a in axes):
        raise ValueError(f"wavelet_axes {axes} must be negative spatial axes of an image {tuple(img_shape)}")
    W = sp.linop.Wavelet(img_shape, axes=tuple(a % len(img_shape) for a in axes), wave_name=wave_name)
    lam_abs = lam * float(np.abs(A.H(y)).max())
    proxg = sp.prox.UnitaryTransform(sp.prox.L1Reg(W.oshape, lam_abs), W)
    app = sp.app.LinearLeastSquares(A, y, proxg=proxg, alpha=1.0 / norm_bound, max_iter=max_iter,
                                    show_pbar=False)
    return app.run()


def _cs_temporal(A: sp.linop.Linop, y: np.ndarray, norm_bound: float, fft_ndim: int, lam: float = 1e-2,
                 max_iter: int = 100, time_axis: int = -3) -> np.ndarray:
    """k-t SPARSE (Lustig et al. 2006): min 1/2 ||A x - y||^2 + lam ||F_t x||_1 by FISTA, sparsity in x-f (the
    temporal Fourier transform of each pixel's time course; a periodic heartbeat has few temporal harmonics).
    lam relative to the peak of the zero-filled image."""
    shape = A.ishape
    if len(shape) < 4 or not -(len(shape) - 1) <= time_axis < 0:
        raise ValueError(f"cs_temporal needs a cine image (M, T, H, W), got {tuple(shape)} with time_axis={time_axis}")
    F = sp.linop.FFT(shape, axes=(time_axis % len(shape),), center=True)
    lam_abs = lam * float(np.abs(A.H(y)).max())
    proxg = sp.prox.UnitaryTransform(sp.prox.L1Reg(F.oshape, lam_abs), F)
    app = sp.app.LinearLeastSquares(A, y, proxg=proxg, alpha=1.0 / norm_bound, max_iter=max_iter, show_pbar=False)
    return app.run()


@dataclass(frozen=True)
class Baseline:
    """A classical method: `solve(A, y, norm_bound, fft_ndim, **params)` on the SENSE operator (None: a method
    built on another one, see `reconstruct`), the data kinds it applies to (None: every kind), and the grid of
    its settings searched on the validation split (empty: nothing to tune)."""

    solve: Callable[..., np.ndarray] | None
    kinds: tuple[str, ...] | None = None
    grid: dict[str, list] = field(default_factory=dict)


# CG-SENSE: Tikhonov weight (relative to ||A||^2) and CG iterations (early stopping regularises too);
# L1 CS: the l1 weight (relative to max |A^H y|), 100 FISTA iterations.
_SENSE_GRID = {"lam": [1e-4, 1e-3, 1e-2, 1e-1], "max_iter": [5, 10, 30]}
_CS_GRID = {"lam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]}
BASELINES: dict[str, Baseline] = {
    "zero_filled": Baseline(_zero_filled),
    "sense": Baseline(_sense, grid=_SENSE_GRID),
    "cs": Baseline(_cs, grid=_CS_GRID),
    # cine: CG-SENSE of every frame on its own (the textbook frame-by-frame reconstruction; CG on the joint
    # system would share step sizes across frames), and L1 CS in x-f over the whole cine.
    "sense_per_frame": Baseline(None, kinds=("cine",), grid=_SENSE_GRID),
    "cs_temporal": Baseline(_cs_temporal, kinds=("cine",), grid=_CS_GRID),
}
METHODS = tuple(BASELINES)


def check_method(method: str, kind: str | None = None) -> Baseline:
    """The registered baseline `method`, refused (ValueError) if unknown or not for data kind `kind`."""
    if method not in BASELINES:
        raise ValueError(f"unknown reconstruction method {method!r}; valid methods: {', '.join(METHODS)}")
    baseline = BASELINES[method]
    if kind is not None and baseline.kinds is not None and kind not in baseline.kinds:
        raise ValueError(f"method {method!r} is for data kind(s) {', '.join(baseline.kinds)}, not {kind!r}")
    return baseline


def reconstruct(
    method: str,
    kspace: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    fft_ndim: int,
    **params: Any,
) -> np.ndarray:
    """Reconstruct one sample with a classical method (`BASELINES`); returns the complex image (M, *S).

    method: "zero_filled" (A^H y), "sense" (CG-SENSE; lam=1e-3 relative, max_iter=30, tol=0),
    "cs" (L1-wavelet; lam=1e-3 relative, max_iter=100, wave_name="db4", wavelet_axes=None); cine, kspace
    (C, T, H, W) and maps (M, C, T or 1, H, W): "sense_per_frame" ("sense" of each frame), "cs_temporal"
    (lam=1e-2 relative, max_iter=100, time_axis=-3).
    Computed in complex128; returned in the precision of `kspace` (at least complex64).
    """
    baseline = check_method(method)
    kspace, maps, mask = np.asarray(kspace), np.asarray(maps), np.asarray(mask)
    if method == "sense_per_frame":
        if kspace.ndim != 4 or maps.ndim != 5:
            raise ValueError(f"sense_per_frame needs cine kspace (C, T, H, W) and maps (M, C, T or 1, H, W), got "
                             f"{kspace.shape} and {maps.shape}")
        frames = kspace.shape[1]
        m = np.broadcast_to(mask, (1, frames) + mask.shape[2:]) if mask.ndim == 4 else mask
        return np.stack([reconstruct("sense", kspace[:, t], maps[:, :, min(t, maps.shape[2] - 1)], m[:, t], fft_ndim,
                                     **params) for t in range(frames)], axis=1)
    params = check_options(baseline.solve, params, f"method {method!r}", skip=("A", "y", "norm_bound", "fft_ndim"))
    _check_shapes(kspace, maps, mask, fft_ndim)
    y = kspace.astype(np.complex128)
    maps128 = maps.astype(np.complex128)
    mask64 = mask.astype(np.float64) + 0.0  # + 0.0: no -0.0 from a signed mask
    A = sense_linop(maps128, mask64, kspace.shape[1:], fft_ndim)
    bound = operator_norm_bound(maps128, mask64)
    if bound == 0:
        raise ValueError("the SENSE operator is zero (all-zero maps or mask)")
    x = baseline.solve(A, y, bound, fft_ndim, **params)
    return np.asarray(x).astype(np.result_type(kspace.dtype, np.complex64))


# ---------------------------------------------------------------------------------------------------
# A baseline's image as it is scored (runner.py, tuning.py)


def data_consistent_coils(x: torch.Tensor | None, maps: torch.Tensor, mask: torch.Tensor, kspace: torch.Tensor,
                          fft_ndim: int) -> torch.Tensor:
    """Coil images (B, C, *S) of k-space that keeps the acquired samples and takes F S x elsewhere
    (x None: zero elsewhere). Their RSS is how an image x of a classical method is put on fastMRI's
    reference, which keeps the noise floor outside the object that S x (cropped maps) sets to zero."""
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
