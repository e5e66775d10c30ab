"""Classical reconstructions of one sample (numpy/sigpy, CPU): zero-filled, CG-SENSE, L1-wavelet CS.

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

import inspect
from typing import Any, Callable

import numpy as np
import sigpy as sp

METHODS = ("zero_filled", "sense", "cs")


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


_IMPL: dict[str, Callable[..., np.ndarray]] = {"zero_filled": _zero_filled, "sense": _sense, "cs": _cs}


def reconstruct(
    method: str,
    kspace: np.ndarray,
    maps: np.ndarray,
    mask: np.ndarray,
    fft_ndim: int,
    **params: Any,
) -> np.ndarray:
    """Reconstruct one sample with a classical method; returns the complex image (M, *S).

    method: "zero_filled" (A^H y), "sense" (CG-SENSE; lam=1e-3 relative, max_iter=30, tol=0),
    "cs" (L1-wavelet; lam=1e-3 relative, max_iter=100, wave_name="db4", wavelet_axes=None).
    Computed in complex128; returned in the precision of `kspace` (at least complex64).
    """
    if method not in _IMPL:
        raise ValueError(f"unknown reconstruction method {method!r}; valid methods: {', '.join(METHODS)}")
    impl = _IMPL[method]
    accepted = list(inspect.signature(impl).parameters)[4:]  # after (A, y, norm_bound, fft_ndim)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"method {method!r} does not take {unknown}; its parameters: {accepted or 'none'}")

    kspace, maps, mask = np.asarray(kspace), np.asarray(maps), np.asarray(mask)
    _check_shapes(kspace, maps, mask, fft_ndim)
    y = kspace.astype(np.complex128)
    maps128 = maps.astype(np.complex128)
    mask64 = mask.astype(np.float64) + 0.0  # + 0.0: no -0.0 from a signed mask
    A = sense_linop(maps128, mask64, kspace.shape[1:], fft_ndim)
    bound = operator_norm_bound(maps128, mask64)
    if bound == 0:
        raise ValueError("the SENSE operator is zero (all-zero maps or mask)")
    x = impl(A, y, bound, fft_ndim, **params)
    return np.asarray(x).astype(np.result_type(kspace.dtype, np.complex64))
