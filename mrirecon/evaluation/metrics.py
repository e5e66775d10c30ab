"""Image quality metrics, defined exactly as fastMRI's evaluate.py (the de facto standard).

Convention (Zbontar et al., fastMRI, `fastmri/evaluate.py`):
  - magnitude volumes (slices, H, W); both target and prediction are centre-cropped to (W, W),
    W = target width (a dimension is cropped only where it is larger);
  - data_range = max of the (cropped) target volume;
  - PSNR and NMSE over the whole volume;
  - SSIM = mean over slices of skimage's SSIM: 7x7 uniform window, K1 = 0.01, K2 = 0.03,
    sample covariance (N / (N - 1)), and the 3-pixel border (where the window would leave the image)
    excluded from the mean;
  - dataset figures = mean (and standard deviation) over volumes.

The functions are written in torch so that `ssim` is also the differentiable training loss
(:class:`SSIMLoss`); evaluation runs them in float64. Cine and 3D data are scored per 2D slice/frame:
leading dims are flattened into slices.
"""
from __future__ import annotations

from typing import Mapping, Sequence, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

METRICS = ("psnr", "ssim", "nmse")

ArrayLike = Tensor | np.ndarray


class VolumeMetrics(TypedDict):
    psnr: float
    ssim: float
    nmse: float


def _real_tensor(x: ArrayLike, name: str) -> Tensor:
    """Numpy arrays become float64 tensors; tensors keep their (floating) dtype and autograd graph."""
    if isinstance(x, np.ndarray):
        if np.iscomplexobj(x):
            raise ValueError(f"{name} is complex: metrics are defined on magnitude images, pass np.abs(...)")
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{name} is complex: metrics are defined on magnitude images, pass x.abs()")
    return x if x.is_floating_point() else x.double()


def _check_same_shape(target: Tensor, pred: Tensor) -> None:
    if target.shape != pred.shape:
        raise ValueError(f"target and prediction shapes differ: {tuple(target.shape)} vs {tuple(pred.shape)}")


def center_crop(x: ArrayLike, shape: tuple[int, int]) -> ArrayLike:
    """Centre-crop the last two dims to `shape` where they are larger (fastMRI's offsets: (n - m) // 2)."""
    h, w = x.shape[-2], x.shape[-1]
    ch, cw = min(shape[0], h), min(shape[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def psnr(target: ArrayLike, pred: ArrayLike, data_range: float | Tensor | None = None) -> Tensor:
    """PSNR in dB over the whole volume: 10 log10(data_range^2 / MSE); data_range defaults to target.max()."""
    t, p = _real_tensor(target, "target"), _real_tensor(pred, "pred")
    _check_same_shape(t, p)
    if data_range is None:
        data_range = t.max()
    mse = (t - p).pow(2).mean()
    return 10 * torch.log10(torch.as_tensor(data_range, dtype=t.dtype, device=t.device) ** 2 / mse)


def nmse(target: ArrayLike, pred: ArrayLike) -> Tensor:
    """Normalised MSE over the whole volume: ||target - pred||^2 / ||target||^2."""
    t, p = _real_tensor(target, "target"), _real_tensor(pred, "pred")
    _check_same_shape(t, p)
    return (t - p).pow(2).sum() / t.pow(2).sum()


def _as_slices(x: Tensor, name: str) -> Tensor:
    """(N, H, W) or (N, 1, H, W) -> (N, 1, H, W)."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4 and x.shape[1] == 1:
        return x
    raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")


def ssim(
    target: ArrayLike,
    pred: ArrayLike,
    data_range: float | Tensor,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
) -> Tensor:
    """SSIM per 2D slice (Wang et al. 2004, with skimage's defaults as used by fastMRI), differentiable.

    target, pred: (N, H, W) or (N, 1, H, W). data_range: a number or a tensor of N per-slice ranges.
    reduction: "mean" (mean over slices, fastMRI's volume SSIM), "sum", or "none" (N values).
    The window statistics are 'valid' box filters, so the (win_size - 1) / 2 border that skimage
    crops away is never computed.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if win_size % 2 != 1 or win_size < 1:
        raise ValueError(f"win_size must be odd and positive, got {win_size}")
    t = _as_slices(_real_tensor(target, "target"), "target")
    p = _as_slices(_real_tensor(pred, "pred"), "pred")
    _check_same_shape(t, p)
    if min(t.shape[-2:]) < win_size:
        raise ValueError(f"images {tuple(t.shape[-2:])} are smaller than the {win_size}x{win_size} SSIM window")
    p = p.to(t.dtype)
    dr = torch.as_tensor(data_range, dtype=t.dtype, device=t.device).reshape(-1, 1, 1, 1)

    def mean(z: Tensor) -> Tensor:
        return F.avg_pool2d(z, win_size, stride=1)

    ux, uy = mean(t), mean(p)
    uxx, uyy, uxy = mean(t * t), mean(p * p), mean(t * p)
    cov_norm = win_size**2 / (win_size**2 - 1)  # sample covariance, as skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * dr) ** 2, (k2 * dr) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    per_slice = s.mean(dim=(1, 2, 3))
    if reduction == "none":
        return per_slice
    return per_slice.sum() if reduction == "sum" else per_slice.mean()


def crop_to_target(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fastMRI's evaluation crop: both to (W, W), W = target width; the results must match in shape."""
    w = target.shape[-1]
    t, p = center_crop(target, (w, w)), center_crop(pred, (w, w))
    if t.shape != p.shape:
        raise ValueError(
            f"after the centre crop to ({w}, {w}) the target is {t.shape} and the prediction {p.shape}: "
            "the prediction must cover the target's field of view"
        )
    return t, p


def evaluate_volume(target: np.ndarray, pred: np.ndarray, crop: bool = True) -> VolumeMetrics:
    """PSNR, SSIM and NMSE of one volume with fastMRI's conventions, in float64.

    target, pred: magnitude volumes (slices, H, W); more leading dims (e.g. cine (slices, frames, H, W))
    are flattened into slices; a single (H, W) image is one slice. Complex input is turned into
    magnitudes. crop=False skips the (W, W) crop (e.g. 3D ky-kz slices, where it is not meaningful).
    """
    target, pred = np.asarray(target), np.asarray(pred)
    if target.ndim < 2 or pred.ndim != target.ndim:
        raise ValueError(f"expected volumes (slices, H, W) of equal rank, got {target.shape} and {pred.shape}")
    if np.iscomplexobj(target):
        target = np.abs(target)
    if np.iscomplexobj(pred):
        pred = np.abs(pred)
    if crop:
        target, pred = crop_to_target(target, pred)
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float64)).reshape(-1, *target.shape[-2:])
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float64)).reshape(-1, *pred.shape[-2:])
    _check_same_shape(t, p)
    data_range = t.max()
    return VolumeMetrics(
        psnr=float(psnr(t, p, data_range)),
        ssim=float(ssim(t, p, data_range)),
        nmse=float(nmse(t, p)),
    )


def summarize(per_volume: Sequence[Mapping[str, float]], metrics: Sequence[str] = METRICS) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over volumes of each metric: {"psnr": {"mean", "std"}, ...}.

    std is the sample standard deviation (ddof=1), as fastMRI's `Metrics.stddevs`; 0.0 for one volume.
    """
    if not per_volume:
        raise ValueError("summarize() needs at least one volume")
    out: dict[str, dict[str, float]] = {}
    for name in metrics:
        missing = [i for i, row in enumerate(per_volume) if name not in row]
        if missing:
            raise ValueError(f"metric {name!r} is missing from volume rows {missing}")
        values = np.array([float(row[name]) for row in per_volume], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[name] = {"mean": float(values.mean()), "std": std}
    return out


class SSIMLoss(nn.Module):
    """1 - SSIM, for training; data_range defaults to each target sample's maximum.

    forward(pred, target, data_range=None) with (N, H, W) or (N, 1, H, W) magnitude images.
    """

    def __init__(self, win_size: int = 7, k1: float = 0.01, k2: float = 0.03):
        super().__init__()
        self.win_size, self.k1, self.k2 = win_size, k1, k2

    def forward(self, pred: Tensor, target: Tensor, data_range: Tensor | float | None = None) -> Tensor:
        if data_range is None:
            data_range = target.detach().flatten(1).amax(dim=1)
        return 1 - ssim(target, pred, data_range, self.win_size, self.k1, self.k2, reduction="mean")

