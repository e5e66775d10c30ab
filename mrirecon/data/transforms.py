"""From raw arrays on disk to a network-ready batch, in two parts (fastMRI's split between its data transform
and its model): a DataLoader worker only reads and masks; everything else runs once per batch on the device.

`ReconTransform.load` (in the worker): the mask (drawn or acquired), numpy -> tensors, coil maps read at the
  recon readout (no FFT, no copy beyond what collation makes): a `LoadedSample` holding the k-space as read.
`BatchTransform` (on the training device, `ReconDataModule.on_after_batch_transfer`; evaluation, tuning and
  the pipeline call the same one): readout crop, undersampling, online maps, the target, the zero-filled image
  and the scaling, for a whole batch at once: a `ReconSample` batch.

A sample holds one slice (2D, ky-kz slice of 3D data, a cine slice with all frames) or a whole 3D volume.
Shapes of a `ReconSample` (C = coils, M = ESPIRiT maps, S = spatial dims; fft over the last `fft_ndim`):
    kspace (C, *S) complex64  undersampled, normalised
    mask   float32 broadcastable to kspace (singleton coil dim)
    maps   (M, C, *S) complex64 (cine: (M, C, 1, H, W), shared over frames)
    target (M, *S) complex64  the reference image (normalised); empty if unknown (undersampled files):
                              "sense": the fully sampled SENSE image A^H y (GLEAM's, meddlr's convention);
                              "rss": the same image rescaled so that its RSS over maps is the RSS of the
                              fully sampled coil images (fastMRI's `reconstruction_rss`), see `rss_target`
A batch has a leading batch dim on every tensor; its samples share one shape, readout crop and geometry.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from ..physics import SenseOp, fftc, ifftc, rss
from .coil_maps import batch_maps
from .errors import DataError
from .masks import MaskFunc, acs_width, apply_mask, check_mask, seed_from_name
from .readers.base import RawSlice

__all__ = ["ReconSample", "RawSlice", "LoadedSample", "ReconTransform", "BatchTransform", "crop_readout",
           "readout_window", "rss_target", "acs_width", "TARGETS", "EpochTagged"]


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


class LoadedSample(NamedTuple):
    """What a DataLoader worker hands over for one item: the data as read, as tensors, and its mask."""
    kspace: Tensor               # (C, *S) complex64 as stored (readout not cropped, not undersampled)
    mask: Tensor                 # float32, broadcastable to the readout-cropped k-space
    maps: Tensor                 # (M, C, *S) cached maps at the recon readout; (0,) with online maps
    readout_crop: int            # rows the readout (dim -2) is cropped to on the device; 0: none
    reference: bool              # kspace is fully sampled: the batch transform builds the target from it
    acceleration: float
    nominal_acceleration: float
    fname: str
    slice_num: int
    fft_ndim: int


def readout_window(height: int, crop: int) -> slice:
    """The central `crop` of `height` readout rows (image space), where fastMRI's recon size sits."""
    start = (height - crop) // 2 if crop < height else 0
    return slice(start, start + min(crop, height))


def crop_readout(kspace: Tensor | np.ndarray, height: int, maps: Tensor | np.ndarray | None = None):
    """Crop the fully sampled readout (dim -2) to `height` in image space (removes 2x oversampling); maps
    (image space) to their central `height` rows when they have more. Any leading dims (a batch) are kept.

    Exact for any phase-encode undersampling, since the readout is never undersampled.
    """
    as_numpy = isinstance(kspace, np.ndarray)
    k = torch.from_numpy(kspace) if as_numpy else kspace
    if height < k.shape[-2]:
        k = fftc(ifftc(k, ndim=[-2])[..., readout_window(k.shape[-2], height), :], ndim=[-2])
    if maps is not None and height < maps.shape[-2]:
        maps = maps[..., readout_window(maps.shape[-2], height), :]
    return (k.numpy() if as_numpy else k), maps


TARGETS = ("rss", "sense")


def rss_target(sense: Tensor, coil_images: Tensor) -> Tensor:
    """The SENSE image (B, M, *S) rescaled per pixel so that its RSS over maps equals the RSS of the coil
    images (B, C, *S): fastMRI's reference (`reconstruction_rss`, which keeps the background noise floor) with
    the SENSE image's phase. Where the SENSE image is zero (outside cropped ESPIRiT maps) the value is put,
    real and positive, into map 0, so the background is a learnable, deterministic image. ("Zero" is
    relative to each sample's largest value.)

    A network trained on it outputs an image whose magnitude (RSS over maps) estimates
    `reconstruction_rss` itself, so fastMRI's evaluator scores the written prediction, that magnitude,
    against the image it was trained to produce (tests/test_metrics.py recomputes it with `fastmri`).
    """
    rss_image, norm = rss(coil_images, 1), rss(sense, 1)
    peak = norm.flatten(1).amax(1).clamp_min(1e-30).view(-1, *[1] * (norm.dim() - 1))
    inside = norm > (1e-12 * peak.double()).to(norm.dtype)  # the threshold rounded once, from double
    out = torch.where(inside[:, None], sense * (rss_image / torch.where(inside, norm, torch.ones_like(norm)))[:, None],
                      0)
    out[:, 0] = torch.where(inside, out[:, 0], rss_image.to(out.dtype))
    return out


class BatchTransform:
    """The device part: a collated `LoadedSample` batch (on any device) -> a `ReconSample` batch there.

    maps: "file" (the batch carries cached maps) or "online" (ESPIRiT from the acquired auto-calibration
      region, `coil_maps.batch_maps`: the region every sample of the batch acquired).
    target: "rss" (fastMRI's reference, default) or "sense" (GLEAM's), see the module docstring.
    Per sample it gives exactly what a batch of one gives (FFTs, maxima and scalings are per sample).
    """

    def __init__(self, target: str = "rss", maps: str = "file", espirit: dict | None = None):
        if maps not in ("file", "online"):
            raise ValueError(f"maps must be 'file' or 'online', got {maps!r}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target, self.maps, self.espirit = target, maps, espirit or {}

    def __call__(self, batch: LoadedSample, device: torch.device | str | None = None) -> ReconSample:
        """`batch` (moved to `device` first when given) -> the `ReconSample` batch, on the batch's device."""
        if device is not None:
            batch = LoadedSample(*(v.to(device) if isinstance(v, Tensor) else v for v in batch))
        names = list(batch.fname)
        full = batch.kspace
        finite = torch.isfinite(torch.view_as_real(full)).flatten(1).all(1)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            raise DataError(names[i], f"NaN or Inf in k-space (slice {int(batch.slice_num[i])})", key="kspace")
        crop, fft_ndim, reference = (_same(names, what, v) for what, v in (
            ("readout crop", batch.readout_crop), ("fft dims", batch.fft_ndim), ("fully sampled", batch.reference)))
        if crop:
            full, _ = crop_readout(full, int(crop))
        mask = batch.mask.to(full.device)
        under = apply_mask(full, mask)
        maps = self._online_maps(under, mask, names, fft_ndim) if self.maps == "online" else batch.maps
        per_sample = (-1, *[1] * (full.dim() - 1))
        if reference:
            coils = ifftc(full, ndim=fft_ndim)  # once: the SENSE image A^H y and the RSS both use them
            target = (maps.conj() * coils[:, None]).sum(2)
            if self.target == "rss":
                target = rss_target(target, coils)
        else:
            target = torch.empty(full.shape[0], 0, dtype=full.dtype, device=full.device)  # no reference
        zero_filled = SenseOp(maps, mask, fft_ndim).H(under)
        scale = zero_filled.abs().flatten(1).amax(1)
        if not bool((scale > 0).all()):
            i = int((scale <= 0).nonzero()[0])
            raise DataError(names[i], f"all-zero undersampled data (slice {int(batch.slice_num[i])})", key="kspace")
        target = target / scale.view(per_sample) if reference else target
        return ReconSample(under / scale.view(per_sample), mask, maps, target, scale.double(), batch.acceleration,
                           batch.nominal_acceleration, batch.fname, batch.slice_num)

    def _online_maps(self, under: Tensor, mask: Tensor, names: list[str], fft_ndim: int) -> Tensor:
        try:
            maps = batch_maps(under, mask, self.espirit, fft_ndim)
        except ValueError as e:
            raise DataError(names[0] if len(names) == 1 else f"batch of {names}", f"online ESPIRiT: {e}",
                            key="mask") from None
        found = maps.abs().flatten(1).amax(1) > 0
        if not bool(found.all()):
            i = int((~found).nonzero()[0])
            raise DataError(names[i], f"online ESPIRiT found no coil sensitivity in a {acs_width(mask[i].cpu())}-line "
                            "calibration region (too small for the kernel); use cached maps or a larger center fraction")
        return maps.to(under.dtype).contiguous()  # reductions over coils then sum in the order they always did


def _same(names: list[str], what: str, values: Tensor) -> int:
    """The one value of a per-sample setting in a batch (samples of other settings cannot share a batch)."""
    v = values.tolist()
    if any(x != v[0] for x in v):
        raise DataError(names[0], f"a batch mixes {what} {sorted(set(v))} (files {names}); batch such files apart "
                        "(data.batch_size: 1)")
    return v[0]


class ReconTransform:
    """Mask, normalise and package a raw slice or volume: `load` in the DataLoader worker, `prepare` (a
    `BatchTransform`) on the device; calling it does both for one sample (`ReconDataset[i]`, scripts).

    mask_func: draws the mask; `deterministic=True` (validation/test) seeds it from the file's base
      name so every run and every process sees the same mask; training masks are seeded from
      (seed, epoch, file, slice) so a seed reproduces a run regardless of the number of workers.
    maps: "file" (cached ESPIRiT maps, see `mrirecon maps`) or "online"
      (ESPIRiT from the acquired auto-calibration region of each sample; the kernel shrinks to fit a few
      calibration lines, see `coil_maps.calibration_region`).
    target: "rss" (fastMRI's reference, default) or "sense" (GLEAM's), see the module docstring.
    """

    def __init__(self, mask_func: MaskFunc | None, deterministic: bool, seed: int = 0,
                 maps: str = "file", espirit: dict | None = None, target: str = "rss"):
        self.prepare = BatchTransform(target, maps, espirit)
        self.mask_func = mask_func
        self.deterministic = deterministic
        self.seed = seed
        self.maps = maps

    @property
    def target(self) -> str:
        return self.prepare.target

    def _mask(self, raw: RawSlice, shape: tuple[int, ...], epoch: int) -> tuple[Tensor, float, float]:
        if raw.mask is not None:
            mask = torch.from_numpy(np.asarray(raw.mask, dtype=np.float32))
            check_mask(mask, raw.fname)
            mask = mask.reshape(*([1] * (len(shape) - mask.dim())), *mask.shape)
            accel = float(mask.numel() / max(float(mask.sum()), 1.0))
            return mask, accel, accel if raw.nominal_acceleration is None else float(raw.nominal_acceleration)
        if self.mask_func is None:
            raise ValueError(f"{raw.fname}: no mask in the file and no mask function configured")
        if self.deterministic:
            seed = seed_from_name(raw.fname)
        else:
            seed = seed_from_name(raw.fname, raw.slice_num, epoch, self.seed)
        m = self.mask_func(shape, seed=seed, training=not self.deterministic)  # training: may use a mask bank
        return m.mask, float(m.acceleration), float(m.nominal)

    def load(self, raw: RawSlice, epoch: int = 0) -> LoadedSample:
        """The worker's part: the mask for the recon-size k-space and the arrays as tensors (no FFT)."""
        kspace = torch.from_numpy(np.asarray(raw.kspace, dtype=np.complex64))
        crop = raw.readout_crop if raw.readout_crop is not None and raw.readout_crop < kspace.shape[-2] else 0
        shape = (*kspace.shape[:-2], crop or kspace.shape[-2], kspace.shape[-1])
        mask, accel, nominal = self._mask(raw, shape, epoch)
        if self.maps == "online":
            maps = torch.empty(0, dtype=torch.complex64)
        elif raw.maps is None:
            raise DataError(raw.fname, "no cached coil maps; run `mrirecon maps --data DIR` "
                            "or set data.maps: online", key="espirit_maps")
        else:
            maps = raw.maps
            if crop and maps.shape[-2] > crop:  # readers may read only these rows already
                maps = maps[..., readout_window(maps.shape[-2], crop), :]
            maps = torch.from_numpy(np.asarray(maps, dtype=np.complex64))
        return LoadedSample(kspace, mask, maps, crop, raw.mask is None or raw.reference, accel, nominal, raw.fname,
                            raw.slice_num, raw.fft_ndim)

    def __call__(self, raw: RawSlice, epoch: int = 0) -> ReconSample:
        """Both parts for one sample (a batch of one through `prepare`, so exactly what training sees)."""
        batch = self.prepare(default_collate([self.load(raw, epoch)]))
        return ReconSample(batch.kspace[0], batch.mask[0], batch.maps[0], batch.target[0], float(batch.scale[0]),
                           float(batch.acceleration[0]), float(batch.nominal_acceleration[0]), batch.fname[0],
                           int(batch.slice_num[0]))


class EpochTagged(Dataset):
    """A dataset's items as a DataLoader worker hands them over (`ReconTransform.load`: read, mask, tensors; the
    batch transform runs on the device). Decodes `datamodule.EpochSampler`'s tagged indices: item i of epoch e
    uses that epoch's mask seed (an untagged index is epoch 0)."""

    def __init__(self, dataset, transform: ReconTransform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, tagged: int) -> LoadedSample:
        epoch, index = divmod(tagged, len(self.dataset))
        return self.transform.load(self.dataset.read(index), epoch=epoch)
