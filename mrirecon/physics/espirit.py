"""ESPIRiT coil sensitivities (Uecker et al., MRM 2014), batched in torch on the data's device.

The one implementation of the framework's coil maps (cache, online maps, evaluation, benchmarks).

1. Calibration matrix: every kernel-sized patch of the central calibration region, all coils (rows =
   patch positions, columns = C * K, K = prod(kernel)). Its right singular vectors with singular value
   > `thresh` * the largest span the signal subspace: found by `eigh` of its (C K x C K) Gram matrix.
2. Each signal kernel, zero-padded to the image and inverse-transformed, gives a C-vector per pixel; the
   sum of their outer products, scaled by N / K, is a Hermitian C x C matrix G(x) per pixel whose leading
   eigenvectors are the maps (eigenvalue ~1 inside the object). G is formed directly, without padding
   and FFT-ing the kernels: it is a trigonometric polynomial in x whose coefficients are the kernel
   projector summed along its lags (`_lag_sums`, (2k - 1) coefficients per dim), so it can be evaluated
   exactly at any pixel, or on a coarse grid.
3. Per-pixel eigenvectors by batched `torch.linalg.eigh` of the C x C matrices; each map set is
   phase-referenced to coil 0 (sigpy's convention) and set to zero where its eigenvalue is <= `crop`.

`coarse_grid` (default: 8 x the kernel width per dim, 48 for fastMRI's 6): G varies on the scale of
image size / (kernel - 1) pixels, so its eigenvectors are smooth; they are computed at `coarse_grid` points
per dim (G is exact there) and interpolated (bicubic) to every pixel, after aligning their phase to a fixed
virtual coil (the leading eigenvector of the image-averaged G) so that the interpolated field is smooth;
the coil-0 phase reference is applied afterwards, per pixel. Measured at fastMRI size against every pixel's
own eigenvectors: 1 - |<a, b>| <= 1e-4 inside the support, 25x less work (results/coil_maps/NOTES.md).
0 computes every pixel exactly. The coarse eigenvectors (`espirit_coarse`, about 1% of the maps' size) can
be kept or moved instead of the maps and expanded where they are needed (`expand_maps`).

Entry points: `espirit` (k-space batch -> maps), `espirit_from_calibration` (calibration regions and the
image shape -> maps), `espirit_coarse` + `expand_maps` (the same in two steps), `espirit_maps` (one numpy
k-space -> numpy maps), `time_average` (cine: the calibration data of maps shared by all frames).

Conventions (those of sigpy's `EspiritCalib`, the reference in tests/test_espirit.py): centred orthonormal
FFTs, calibration region and zero-padded kernels centred at n // 2 - m // 2.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

COARSE_POINTS_PER_KERNEL = 8  # coarse grid points per dim per kernel width (coarse_grid=None)


class Espirit(NamedTuple):
    """maps (..., M, C, *S) complex64 and eigenvalues (..., M, *S) float32 (maps zero where eig <= crop)."""

    maps: Tensor
    eig: Tensor


def _as_shape(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    shape = (int(value),) * ndim if np.isscalar(value) else tuple(int(v) for v in value)
    if len(shape) != ndim:
        raise ValueError(f"{name} {value!r} must be one number or {ndim} numbers (one per spatial dim)")
    return shape


def _centre(n: int, m: int) -> slice:
    """The m central entries of n (centre at n // 2, the centred FFT's convention)."""
    start = n // 2 - m // 2
    return slice(start, start + m)


def central_region(kspace: Tensor, calib: Sequence[int]) -> Tensor:
    """The central `calib` region of the last len(calib) dims of `kspace` (a view)."""
    d = len(calib)
    spatial = tuple(kspace.shape[-d:])
    if any(c > n for c, n in zip(calib, spatial)):
        raise ValueError(f"calibration region {tuple(calib)} larger than the k-space matrix {spatial}")
    return kspace[(Ellipsis,) + tuple(_centre(n, c) for n, c in zip(spatial, calib))]


def time_average(kspace: Tensor, dim: int) -> Tensor:
    """Cine k-space averaged over frames (`dim`), each sample over the frames that acquired it, so that a
    fully sampled calibration region stays fully sampled: the calibration data of maps shared by all frames."""
    acquired = (kspace != 0).sum(dim).clamp(min=1)
    return kspace.sum(dim) / acquired


def _signal_projector(calib: Tensor, kernel: tuple[int, ...], thresh: float) -> Tensor:
    """(B, C K, C K) projector onto the conjugated signal kernels, sum_k conj(v_k) v_k^T, from (B, C, *calib)."""
    B, C = calib.shape[:2]
    d = len(kernel)
    patches = calib
    for j, k in enumerate(kernel):  # (B, C, *positions, *kernel) after unfolding every spatial dim
        patches = patches.unfold(2 + j, k, 1)
    perm = [0, *range(2, 2 + d), 1, *range(2 + d, 2 + 2 * d)]
    rows = patches.permute(perm).reshape(B, -1, C * math.prod(kernel))  # (B, positions, C K)
    gram = rows.mH @ rows
    lam, vec = torch.linalg.eigh(gram)  # ascending; lam = singular values squared
    keep = lam > (thresh ** 2) * lam[:, -1:].clamp(min=0)
    vec = vec * keep[:, None, :]
    return (vec @ vec.mH).conj()


def _lag_sums(projector: Tensor, C: int, kernel: tuple[int, ...]) -> Tensor:
    """(B, C, C, *(2k - 1)) coefficients D(lag) = sum over r - r' = lag of Q[(c, r), (c', r')]."""
    B, d = projector.shape[0], len(kernel)
    q = projector.reshape(B, C, *kernel, C, *kernel)
    q = q.permute(0, 1, 2 + d, *range(2, 2 + d), *range(3 + d, 3 + 2 * d))  # (B, C, C', *r, *r')
    out = q.new_zeros(B, C, C, *(2 * k - 1 for k in kernel))
    for rp in itertools.product(*(range(k) for k in kernel)):
        target = tuple(slice(k - 1 - r, 2 * k - 1 - r) for k, r in zip(kernel, rp))
        out[(slice(None),) * 3 + target] += q[(Ellipsis,) + tuple(rp)]
    return out


def _fourier_rows(positions: Tensor, n: int, k: int) -> Tensor:
    """(len(positions), 2k - 1) exp(2 pi i lag (x - n // 2) / n) for lags -(k - 1)..k - 1."""
    lags = torch.arange(-(k - 1), k, dtype=torch.float64, device=positions.device)
    phase = 2 * math.pi * (positions.double()[:, None] - n // 2) * lags[None, :] / n
    return torch.polar(torch.ones_like(phase), phase).to(torch.complex64)


def _evaluate(coeffs: Tensor, rows: Sequence[Tensor], K: int) -> Tensor:
    """G at the grid given by `rows` (one Fourier-row matrix per spatial dim): (B, *grid, C, C)."""
    d = len(rows)
    g = coeffs
    for j, e in enumerate(rows):  # contract one lag dim at a time: (.., lag_j, ..) -> (.., x_j, ..)
        g = torch.movedim(torch.movedim(g, 3 + j, -1) @ e.T, -1, 3 + j)
    return torch.movedim(torch.movedim(g, 1, -1), 1, -1) / K


def _leading_eigvecs(g: Tensor, num_maps: int) -> tuple[Tensor, Tensor]:
    """(…, C, C) Hermitian -> eigenvectors (…, M, C) and eigenvalues (…, M), largest first."""
    w, v = torch.linalg.eigh(g)  # ascending
    return v[..., -num_maps:].flip(-1).transpose(-1, -2), w[..., -num_maps:].flip(-1)


def espirit(
    kspace: Tensor,
    calib: int | Sequence[int] = 24,
    kernel: int | Sequence[int] = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    num_maps: int = 1,
    coarse_grid: int | Sequence[int] | None = None,
    ndim: int = 2,
    chunk: int = 16384,
) -> Espirit:
    """ESPIRiT maps of every (..., C, *S) k-space in a batch, on its device (see the module docstring).

    calib, kernel: the central calibration region and the kernel, one number or one per spatial dim (a
    rectangle, e.g. fastMRI brain's few centre lines by part of the readout). Only the calibration region is
    read (it must be fully sampled), so undersampled k-space with a fully sampled centre works as it is.
    num_maps: map sets (soft SENSE). coarse_grid: grid points per dim for the eigen-decomposition (0: every
    pixel; None: 8 x kernel). ndim: spatial dims (2: a slice, a ky-kz slice, a cine frame average; 3: a
    volume). chunk: grid points per eigen-decomposition batch (bounds memory).
    """
    if not torch.is_tensor(kspace):
        raise TypeError("espirit takes a torch tensor; espirit_maps takes numpy arrays")
    cs = _as_shape(calib, ndim, "calib")
    return espirit_from_calibration(central_region(kspace, cs), tuple(kspace.shape[-ndim:]), kernel, thresh, crop,
                                    num_maps, coarse_grid, chunk)


def espirit_from_calibration(
    calib: Tensor,
    image_shape: Sequence[int],
    kernel: int | Sequence[int] = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    num_maps: int = 1,
    coarse_grid: int | Sequence[int] | None = None,
    chunk: int = 16384,
) -> Espirit:
    """`espirit` from the calibration regions (..., C, *calib) alone (all that ESPIRiT reads) and the image
    shape: the cache reads only these few samples of a file, and a training step only moves them."""
    return expand_maps(espirit_coarse(calib, image_shape, kernel, thresh, num_maps, coarse_grid, chunk), crop)


class CoarseMaps(NamedTuple):
    """ESPIRiT eigenvectors (..., M, C, *grid) and eigenvalues (..., M, *grid) on the coarse grid (every pixel
    along dims the grid does not thin), phase aligned to a virtual coil so they interpolate smoothly, and the
    image shape. `expand_maps` makes the maps: a slice's maps in about 1% of their full size."""

    vectors: Tensor
    eig: Tensor
    image_shape: tuple[int, ...]


def espirit_coarse(
    calib: Tensor,
    image_shape: Sequence[int],
    kernel: int | Sequence[int] = 6,
    thresh: float = 0.02,
    num_maps: int = 1,
    coarse_grid: int | Sequence[int] | None = None,
    chunk: int = 16384,
) -> CoarseMaps:
    """Steps 1-3 of the module docstring on the coarse grid (see `espirit_from_calibration`)."""
    ndim = len(image_shape)
    spatial = tuple(int(n) for n in image_shape)
    cs = tuple(calib.shape[-ndim:])
    if any(c > n for c, n in zip(cs, spatial)):
        raise ValueError(f"calibration region {cs} larger than the k-space matrix {spatial}")
    lead = tuple(calib.shape[:-ndim - 1])
    C = calib.shape[-ndim - 1]
    ks = _as_shape(kernel, ndim, "kernel")
    if any(k > c for k, c in zip(ks, cs)):
        raise ValueError(f"kernel {ks} larger than the calibration region {cs}")
    if not 1 <= num_maps <= C:
        raise ValueError(f"num_maps must be in [1, {C}] (the number of coils), got {num_maps}")
    grid_n = tuple(COARSE_POINTS_PER_KERNEL * k for k in ks) if coarse_grid is None else \
        _as_shape(coarse_grid, ndim, "coarse_grid")
    if any(g < 0 or 0 < g < 4 for g in grid_n):
        raise ValueError(f"coarse_grid must be 0 (every pixel) or at least 4 points per dim, got {coarse_grid}")
    region = calib.reshape(-1, C, *cs).to(torch.complex64)
    B, K = region.shape[0], math.prod(ks)
    coeffs = _lag_sums(_signal_projector(region, ks, thresh), C, ks)
    dev = calib.device
    coarse = [0 < g < n for g, n in zip(grid_n, spatial)]
    grid = [torch.linspace(0, n - 1, g, device=dev) if c else torch.arange(n, device=dev)
            for g, n, c in zip(grid_n, spatial, coarse)]
    rows = [_fourier_rows(x, n, k) for x, n, k in zip(grid, spatial, ks)]
    gshape = tuple(len(x) for x in grid)
    # Eigen-decompose in chunks along the first spatial dim: G of every grid point at once would be
    # C * C * pixels (a 640 x 368 x 15-coil slice: 420 MB).
    step = max(1, chunk // max(1, math.prod(gshape[1:])))
    vecs, vals = [], []
    for start in range(0, gshape[0], step):
        part = [rows[0][start:start + step], *rows[1:]]
        v, w = _leading_eigvecs(_evaluate(coeffs, part, K), num_maps)
        vecs.append(v)
        vals.append(w)
    v = torch.cat(vecs, 1)  # (B, *grid, M, C)
    w = torch.cat(vals, 1)  # (B, *grid, M)
    v = torch.movedim(torch.movedim(v, -1, 1), -1, 1)  # (B, M, C, *grid)
    w = torch.movedim(w, -1, 1)  # (B, M, *grid)
    if any(coarse):
        v = v * _virtual_coil_phase(v, coeffs)
    return CoarseMaps(v.reshape(*lead, num_maps, C, *gshape), w.reshape(*lead, num_maps, *gshape).float(), spatial)


def _virtual_coil_phase(v: Tensor, coeffs: Tensor) -> Tensor:
    """(B, M, 1, *grid) phase factors that align the eigenvectors (B, M, C, *grid) to a virtual coil, the leading
    eigenvector of the image-averaged G (coeffs at lag 0): a smooth field to interpolate, unlike coil 0's phase
    where coil 0 is weak."""
    lag0 = coeffs[(slice(None),) * 3 + tuple(s // 2 for s in coeffs.shape[3:])]  # (B, C, C)
    virtual = torch.linalg.eigh(lag0)[1][..., -1]  # (B, C)
    proj = torch.einsum("bc,bmc...->bm...", virtual.conj(), v)[:, :, None]
    return torch.where(proj.abs() > 0, proj.conj() / proj.abs().clamp(min=1e-30), torch.ones_like(proj))


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(n_in: int, n_out: int, mode: str, device: torch.device) -> Tensor:
    """(n_out, n_in) float32 matrix of 1D interpolation from n_in to n_out points, align_corners: torch's
    bicubic (Keys, a = -0.75, edges clamped) and trilinear are separable, so the maps of any grid are these
    matrices applied along each dim. Built by interpolating the identity with torch itself (one definition)."""
    eye = torch.eye(n_in, device=device)
    if mode == "bicubic":  # 2D bicubic on (n_in, 1, n_in, 1) interpolates the first dim only
        out = torch.nn.functional.interpolate(eye.reshape(n_in, 1, n_in, 1), size=(n_out, 1), mode=mode,
                                              align_corners=True)
    else:
        out = torch.nn.functional.interpolate(eye.reshape(n_in, 1, n_in), size=n_out, mode="linear",
                                              align_corners=True)
    return out.reshape(n_in, n_out).T.contiguous()


def _interpolate_separable(x: Tensor, spatial: tuple[int, ...], mode: str, rows: slice) -> Tensor:
    """Real x (..., *grid) interpolated to `spatial` (only `rows` of dim -2), one matrix product per dim; the
    last two dims multiply in place (U @ x, x @ U^T), so the result is contiguous."""
    ndim = len(spatial)
    for d in range(ndim):
        axis = x.ndim - ndim + d
        last = d == ndim - 1
        n_in = x.shape[axis]
        if n_in == spatial[d]:
            if d == ndim - 2:
                x = x.narrow(axis, *_start_len(rows, spatial[d]))
            continue
        U = _interpolation_matrix(n_in, spatial[d], mode, x.device)
        if d == ndim - 2:
            x = torch.matmul(U[rows], x)
        elif last:
            x = torch.matmul(x, U.T)
        else:
            x = torch.movedim(torch.matmul(U, torch.movedim(x, axis, -2)), -2, axis)
    return x


def _start_len(rows: slice, n: int) -> tuple[int, int]:
    start, stop, step = rows.indices(n)
    if step != 1:
        raise ValueError(f"rows {rows} must be a contiguous slice")
    return start, max(0, stop - start)


def expand_maps(coarse: CoarseMaps, crop: float = 0.95, rows: slice = slice(None)) -> Espirit:
    """Maps (..., M, C, *S) and eigenvalues at every pixel from `espirit_coarse`: bicubic interpolation (trilinear
    in 3D) of the eigenvectors and eigenvalues, then per pixel unit norm over coils, coil 0's phase removed
    (sigpy's convention) and zero where the eigenvalue is <= crop. On the device the coarse maps are on.
    `rows`: only these rows of dim -2 (the recon readout of a fastMRI slice: half the work).

    The interpolation is one matrix product per dim on the real and imaginary planes (same numbers as torch's
    interpolate to float rounding; 16 ms for the 320 recon rows of a 640 x 368 x 15 slice on one core, against
    150 ms for torch's interpolate and normalisation of the whole slice), and the normalisation works
    on the planes too: a per-pixel factor conj(v_0) / (|v_0| ||v||), then two products per coil."""
    v, w, spatial = coarse.vectors, coarse.eig, coarse.image_shape
    ndim = len(spatial)
    lead, (M, C), gshape = v.shape[:-ndim - 2], v.shape[-ndim - 2:-ndim], tuple(v.shape[-ndim:])
    mode = "bicubic" if ndim == 2 else "trilinear"
    planes = torch.stack([v.real, v.imag], -ndim - 1)  # (..., M, C, 2, *grid)
    planes = _interpolate_separable(planes, spatial, mode, rows)
    w = _interpolate_separable(w, spatial, mode, rows)
    re, im = planes.unbind(-ndim - 1)  # (..., M, C, *out)
    # v * conj(v_0) / |v_0| / ||v||: coil 0's phase removed, unit norm; where v_0 = 0 the phase is left as is.
    # All but the last products are per pixel (one coil's plane).
    # over coils and re/im (torch.linalg.vector_norm over two dims is 6x slower here)
    norm = planes.square().sum((-ndim - 2, -ndim - 1)).sqrt().unsqueeze(-ndim - 1)
    r0, i0 = re.narrow(-ndim - 1, 0, 1), im.narrow(-ndim - 1, 0, 1)
    ref = torch.hypot(r0, i0)
    nonzero = ref > 0
    safe = torch.where(nonzero, ref, torch.ones_like(ref))
    r0, i0 = torch.where(nonzero, r0 / safe, torch.ones_like(r0)), torch.where(nonzero, i0 / safe, torch.zeros_like(i0))
    keep = (w > crop).unsqueeze(-ndim - 1) / norm.clamp(min=1e-30)
    r0, i0 = r0 * keep, i0 * keep
    maps = torch.complex((re * r0).addcmul_(im, i0), (im * r0).addcmul_(re, i0, value=-1))
    return Espirit(maps, w)


def espirit_maps(
    kspace: np.ndarray | Tensor,
    calib_width: int | Sequence[int] = 16,
    kernel_width: int | Sequence[int] = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    num_maps: int = 1,
    coarse_grid: int | Sequence[int] | None = None,
) -> np.ndarray | Tensor:
    """Sensitivity maps (M, C, *S) complex64 of one multi-coil k-space (C, *S), numpy or torch (returned alike).

    `calib_width`: the side of the central calibration region, or one extent per spatial dim (a rectangle);
    it must be fully sampled and larger than `kernel_width` (also one number or one per dim). Maps have
    sum_c |S_c|^2 = 1 inside the support and are zero outside (`crop`). See `espirit` for the rest.
    """
    ndim = kspace.ndim - 1
    calib = _as_shape(calib_width, ndim, "calib_width")
    kernel = _as_shape(kernel_width, ndim, "kernel_width")
    if all(c == k for c, k in zip(calib, kernel)):
        raise ValueError(f"calib_width {calib_width} must exceed kernel_width {kernel_width} in some dim")
    is_numpy = not torch.is_tensor(kspace)
    x = torch.from_numpy(np.asarray(kspace)) if is_numpy else kspace
    maps = espirit(x, calib, kernel, thresh, crop, num_maps, coarse_grid, ndim).maps
    return maps.numpy() if is_numpy else maps
