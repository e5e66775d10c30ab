"""ESPIRiT coil sensitivities (Uecker et al. 2014).

One map set from a square (cubic) calibration region: sigpy's EspiritCalib (power iteration).
Several map sets (soft SENSE) or a rectangular calibration region (a few acquired phase-encode lines
by the full readout, fastMRI brain's 4% centre fraction): our own eigen-decomposition of the same
image-space matrix, written from the paper; for one map it agrees with sigpy (tests/test_data.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _centre(n: int, m: int) -> slice:
    """The m central entries of n (centre at n // 2, the centred FFT's convention)."""
    start = n // 2 - m // 2
    return slice(start, start + m)


def _as_shape(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    shape = (int(value),) * ndim if np.isscalar(value) else tuple(int(v) for v in value)
    if len(shape) != ndim:
        raise ValueError(f"{name} {value!r} must be one number or {ndim} numbers (one per spatial dim)")
    return shape


def espirit_eigen(kspace: np.ndarray, calib_shape: Sequence[int], kernel_shape: Sequence[int],
                  thresh: float = 0.02, crop: float = 0.95, num_maps: int = 1,
                  chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """ESPIRiT maps (M, C, *S) and their eigenvalues (M, *S) by a per-pixel eigen-decomposition.

    1. Calibration matrix: every kernel_shape patch of the central calib_shape region, all coils
       (rows = patch positions, columns = C * prod(kernel_shape)).
    2. Its right singular vectors with singular value > thresh * largest span the signal subspace.
    3. Each such kernel, zero-padded to the image size and inverse-transformed, gives a C-vector per
       pixel; the sum of their outer products (scaled by prod(S) / prod(kernel_shape), so that the
       sensitivities have eigenvalue ~1) is a C x C matrix per pixel.
    4. Its M leading eigenvectors are the map sets; each is phase-referenced to coil 0 and set to zero
       where its eigenvalue is <= crop.
    """
    import torch

    from .fft import ifftc

    C, *S = kspace.shape
    d = len(S)
    cs, ks = tuple(calib_shape), tuple(kernel_shape)
    if any(c > n for c, n in zip(cs, S)):
        raise ValueError(f"calibration region {cs} larger than the k-space matrix {tuple(S)}")
    if any(k > c for k, c in zip(ks, cs)):
        raise ValueError(f"kernel {ks} larger than the calibration region {cs}")
    if not 1 <= num_maps <= C:
        raise ValueError(f"num_maps must be in [1, {C}] (the number of coils), got {num_maps}")
    calib = kspace[(slice(None),) + tuple(_centre(n, c) for n, c in zip(S, cs))].astype(np.complex128)
    patches = np.lib.stride_tricks.sliding_window_view(calib, ks, axis=tuple(range(1, d + 1)))
    # (C, *positions, *kernel) -> (positions, C * kernel)
    patches = np.moveaxis(patches, 0, d).reshape(-1, C * int(np.prod(ks)))
    _, sv, vh = np.linalg.svd(patches, full_matrices=False)
    kernels = vh[sv > thresh * sv.max()].reshape(-1, C, *ks)
    gram = np.zeros((int(np.prod(S)), C, C), np.complex128)
    for kernel in kernels:
        padded = np.zeros((C, *S), np.complex128)
        padded[(slice(None),) + tuple(_centre(n, k) for n, k in zip(S, ks))] = kernel
        v = ifftc(torch.from_numpy(padded), ndim=d).numpy().reshape(C, -1).T  # (pixels, C)
        gram += v[:, :, None] * v[:, None, :].conj()
    gram *= np.prod(S) / np.prod(ks)
    maps = np.empty((num_maps, C, gram.shape[0]), np.complex128)
    eig = np.empty((num_maps, gram.shape[0]))
    for start in range(0, gram.shape[0], chunk):
        w, u = np.linalg.eigh(gram[start:start + chunk])  # ascending eigenvalues
        for m in range(num_maps):
            eig[m, start:start + chunk] = w[:, -1 - m]
            maps[m, :, start:start + chunk] = u[:, :, -1 - m].T
    ref = maps[:, :1]
    phase = np.where(np.abs(ref) > 0, np.conj(ref) / np.maximum(np.abs(ref), 1e-30), 1.0)
    maps = maps * phase * (eig > crop)[:, None]
    return maps.reshape(num_maps, C, *S).astype(np.complex64), eig.reshape(num_maps, *S)


def espirit_maps(
    kspace: np.ndarray,
    calib_width: int | Sequence[int] = 16,
    kernel_width: int | Sequence[int] = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 30,
    num_maps: int = 1,
) -> np.ndarray:
    """Sensitivity maps (M, C, *S) complex64 from multi-coil k-space (C, *S).

    `calib_width`: the side of the central calibration region, or one extent per spatial dim (a
    rectangle); it must be fully sampled in `kspace` and at least `kernel_width` (also one number or
    one per dim). Maps are normalised so that sum_c |S_c|^2 = 1 inside the support and zero outside
    (`crop`). One map from a square region: sigpy's EspiritCalib (`max_iter` power iterations);
    otherwise `espirit_eigen` (`max_iter` unused).
    """
    spatial = kspace.shape[1:]
    calib = _as_shape(calib_width, len(spatial), "calib_width")
    kernel = _as_shape(kernel_width, len(spatial), "kernel_width")
    if any(c > n for c, n in zip(calib, spatial)):
        raise ValueError(f"calib_width {calib_width} larger than the k-space matrix {spatial}")
    square = len(set(calib)) == 1 and len(set(kernel)) == 1
    if num_maps == 1 and square:
        if calib[0] <= kernel[0]:
            raise ValueError(f"calib_width ({calib[0]}) must exceed kernel_width ({kernel[0]})")
        import sigpy.mri as mr  # imported lazily: sigpy/numba start-up is slow

        maps = mr.app.EspiritCalib(
            kspace, calib_width=calib[0], kernel_width=kernel[0], thresh=thresh, crop=crop,
            max_iter=max_iter, show_pbar=False,
        ).run()
        return np.asarray(maps, dtype=np.complex64)[None]
    return espirit_eigen(kspace, calib, kernel, thresh, crop, num_maps)[0]
