"""From raw arrays on disk to a network-ready sample (fastMRI `transforms.py` in spirit).

A sample holds one slice (2D, ky-kz slice of 3D data, a cine slice with all frames) or a whole
3D volume. Shapes (C = coils, M = ESPIRiT maps, S = spatial dims; fft over the last `fft_ndim`):
    kspace (C, *S) complex64  undersampled, normalised
    mask   float32 broadcastable to kspace (singleton coil dim)
    maps   (M, C, *S) complex64 (cine: (M, C, 1, H, W), shared over frames)
    target (M, *S) complex64  the reference image (normalised); empty if unknown (undersampled files):
                              "sense": the fully sampled SENSE image A^H y (GLEAM's, meddlr's convention);
                              "rss": the same image rescaled so that its RSS over maps is the RSS of the
                              fully sampled coil images (fastMRI's `reconstruction_rss`), see `rss_target`
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..physics import SenseOp, fftc, ifftc
from .errors import DataError
from .subsample import MaskFunc, apply_mask, check_mask, seed_from_name


class ReconSample(NamedTuple):
    kspace: Tensor
    mask: Tensor
    maps: Tensor
    target: Tensor
    scale: float          # kspace and target were divided by this; multiply predictions back
    acceleration: float   # effective acceleration of the mask (sampled fraction)
    nominal_acceleration: float  # the configured acceleration drawn for this mask (results are grouped by it)
    fname: str
    slice_num: int        # -1 for whole volumes


class RawSlice(NamedTuple):
    """What a dataset reads from disk for one item, before the transform."""
    kspace: np.ndarray            # (C, *S) fully sampled (or pre-undersampled if `mask` is given)
    maps: np.ndarray | None       # (M, C, *S) or (M, C, 1, H, W) for cine
    mask: np.ndarray | None       # mask stored in the file (fastMRI test sets), broadcastable
    fname: str
    slice_num: int
    readout_crop: int | None      # recon height: crop the fully sampled readout (dim -2) to it
    fft_ndim: int
    # kspace is fully sampled although `mask` is given: the acquired mask of a dataset that ships both
    # (CMRxRecon FullSample + AccFactor masks); the target is then the fully sampled image
    reference: bool = False


def crop_readout(kspace: np.ndarray, height: int, maps: np.ndarray | None = None):
    """Crop the fully sampled readout (dim -2) to `height` in image space (removes 2x oversampling).

    Exact for any phase-encode undersampling, since the readout is never undersampled.
    """
    h = kspace.shape[-2]
    if height >= h:
        return kspace, maps
    start = (h - height) // 2
    hybrid = ifftc(torch.from_numpy(kspace), ndim=[-2])[..., start : start + height, :]
    kspace = fftc(hybrid, ndim=[-2]).numpy()
    if maps is not None:
        maps = maps[..., start : start + height, :]
    return kspace, maps


TARGETS = ("rss", "sense")


def rss_target(sense: Tensor, coil_images: Tensor) -> Tensor:
    """The SENSE image (M, *S) rescaled per pixel so that its RSS over maps equals the RSS of the coil
    images (C, *S): fastMRI's reference (`reconstruction_rss`, which keeps the background noise floor) with
    the SENSE image's phase. Where the SENSE image is zero (outside cropped ESPIRiT maps) the value is put,
    real and positive, into map 0, so the background is a learnable, deterministic image.

    A network trained on it outputs an image whose magnitude (RSS over maps) estimates
    `reconstruction_rss` itself, so fastMRI's evaluator scores the written prediction, that magnitude,
    against the image it was trained to produce (tests/test_metrics.py recomputes it with `fastmri`).
    """
    rss = torch.sqrt((coil_images.abs() ** 2).sum(0))
    norm = torch.sqrt((sense.abs() ** 2).sum(0))
    inside = norm > 1e-12 * float(norm.max().clamp_min(1e-30))
    out = torch.where(inside, sense * (rss / torch.where(inside, norm, torch.ones_like(norm))), 0)
    out[0] = torch.where(inside, out[0], rss.to(out.dtype))
    return out


def acs_width(mask: Tensor) -> int:
    """Side of the fully sampled square centred in k-space (the auto-calibration region).

    For 1D masks (readout fully sampled) it is the number of contiguous centre lines; for masks
    varying over leading dims (cine frames) only locations sampled in every frame count.
    """
    m = mask.reshape(-1, *mask.shape[-2:]).amin(0) > 0
    rows, cols = m.shape
    width = 0
    for k in range(1, (cols if rows == 1 else min(rows, cols)) + 1):
        # centred as in fastMRI's masks: k lines starting at (n - k + 1) // 2, around index n // 2
        r0, c0 = (rows - k + 1) // 2 if rows > 1 else 0, (cols - k + 1) // 2
        if not bool(m[r0 : r0 + (k if rows > 1 else 1), c0 : c0 + k].all()):
            break
        width = k
    return width


class ReconTransform:
    """Mask, normalise and package a raw slice or volume.

    mask_func: draws the mask; `deterministic=True` (validation/test) seeds it from the file's base
      name so every run and every process sees the same mask; training masks are seeded from
      (seed, epoch, file, slice) so a seed reproduces a run regardless of the number of workers.
    maps: "file" (cached ESPIRiT maps, see `python -m mrirecon.data.coil_maps`) or "online"
      (ESPIRiT from the acquired auto-calibration region of each sample; the kernel shrinks to fit a few
      calibration lines, see `coil_maps.calibration_region`).
    target: "rss" (fastMRI's reference, default) or "sense" (GLEAM's), see the module docstring.
    """

    def __init__(self, mask_func: MaskFunc | None, deterministic: bool, seed: int = 0,
                 maps: str = "file", espirit: dict | None = None, target: str = "rss"):
        if maps not in ("file", "online"):
            raise ValueError(f"maps must be 'file' or 'online', got {maps!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.mask_func = mask_func
        self.deterministic = deterministic
        self.seed = seed
        self.maps = maps
        self.espirit = espirit or {}

    def _mask(self, raw: RawSlice, shape: tuple[int, ...], epoch: int) -> tuple[Tensor, float, float]:
        if raw.mask is not None:
            mask = torch.from_numpy(np.asarray(raw.mask, dtype=np.float32))
            check_mask(mask, raw.fname)
            mask = mask.reshape(*([1] * (len(shape) - mask.dim())), *mask.shape)
            accel = float(mask.numel() / max(float(mask.sum()), 1.0))
            return mask, accel, accel
        if self.mask_func is None:
            raise ValueError(f"{raw.fname}: no mask in the file and no mask function configured")
        if self.deterministic:
            seed = seed_from_name(raw.fname)
        else:
            seed = seed_from_name(raw.fname, raw.slice_num, epoch, self.seed)
        m = self.mask_func(shape, seed=seed, training=not self.deterministic)  # training: may use a mask bank
        return m.mask, float(m.acceleration), float(m.nominal)

    def __call__(self, raw: RawSlice, epoch: int = 0) -> ReconSample:
        kspace, maps = raw.kspace, raw.maps
        if not np.isfinite(kspace).all():
            raise DataError(raw.fname, f"NaN or Inf in k-space (slice {raw.slice_num})", key="kspace")
        if raw.readout_crop is not None:
            kspace, maps = crop_readout(kspace, raw.readout_crop, maps)
        full = torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))
        mask, accel, nominal = self._mask(raw, tuple(full.shape), epoch)
        under = apply_mask(full, mask)
        if self.maps == "online":
            width = acs_width(mask)
            try:
                maps = self._online_maps(under.numpy(), mask, raw.fft_ndim)
            except ValueError as e:
                raise DataError(raw.fname, f"online ESPIRiT: {e}", key="mask") from None
            if not np.abs(maps).max() > 0:
                raise DataError(raw.fname, f"online ESPIRiT found no coil sensitivity in a {width}-line calibration "
                                "region (too small for the kernel); use cached maps or a larger center fraction")
        elif maps is None:
            raise DataError(raw.fname, "no cached coil maps; run `python -m mrirecon.data.coil_maps --data DIR` "
                            "or set data.maps: online", key="espirit_maps")
        maps_t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.complex64))
        if raw.mask is None or raw.reference:
            coils = ifftc(full, ndim=raw.fft_ndim)  # once: the SENSE image A^H y and the RSS both use them
            target = (maps_t.conj() * coils[None]).sum(1)
            if self.target == "rss":
                target = rss_target(target, coils)
        else:
            target = torch.empty(0, dtype=torch.complex64)  # pre-undersampled file: no reference
        zero_filled = SenseOp(maps_t[None], mask[None], raw.fft_ndim).H(under[None])[0]
        scale = float(zero_filled.abs().max())
        if not scale > 0:
            raise DataError(raw.fname, f"all-zero undersampled data (slice {raw.slice_num})", key="kspace")
        return ReconSample(under / scale, mask, maps_t, target / scale, scale, accel, nominal, raw.fname,
                           raw.slice_num)

    def _online_maps(self, under: np.ndarray, mask: Tensor, fft_ndim: int) -> np.ndarray:
        from ..physics import espirit_maps
        from .coil_maps import calibration_region

        # A smaller kernel than for cached maps: the acquired calibration region is often small.
        cfg = {"kernel_width": 4, **{k: v for k, v in self.espirit.items() if k != "calib_width"}}
        kernel_width = cfg.pop("kernel_width")
        if fft_ndim == 3:  # whole 3D volumes: the sampled centre cube
            width = acs_width(mask)
            return espirit_maps(under, calib_width=width, kernel_width=min(kernel_width, width - 1), **cfg)
        calib, kernel = calibration_region(mask.numpy(), under.shape[-2:], 0, kernel_width)
        if under.ndim == 4 and fft_ndim == 2:  # cine (C, T, H, W): time-averaged k-space
            avg = under.sum(1) / np.maximum((np.abs(under) > 0).sum(1), 1)
            return espirit_maps(avg, calib_width=calib, kernel_width=kernel, **cfg)[:, :, None]
        return espirit_maps(under, calib_width=calib, kernel_width=kernel, **cfg)


def to_numpy_magnitude(x: Tensor) -> np.ndarray:
    """(M, *S) complex -> RSS over maps, float32 numpy."""
    return torch.sqrt((x.abs() ** 2).sum(0)).float().cpu().numpy()


MaskFactory = Callable[[], MaskFunc]
