"""Patch matrices: what a k x k convolution sees at every pixel, as the rows of a matrix.

A two-layer fully convolutional network with k x k first-layer filters and 1 x 1 second-layer weights
predicts each output pixel from one k x k patch of the input, so it is a two-layer fully connected
network on the rows of the patch matrix X (Sahiner et al., ICLR 2021). 'same' zero padding gives one
patch, and one output pixel, per input pixel.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def check_kernel_size(kernel_size: int, spatial: tuple[int, ...] | None = None) -> None:
    """kernel_size must be an odd integer >= 1 ('same' padding k // 2 is symmetric only for odd k) and,
    when the image size is known, no larger than the image."""
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"convex model: kernel_size must be an odd integer >= 1, got {kernel_size!r}")
    if spatial is not None and any(kernel_size > s for s in spatial):
        raise ValueError(f"convex model: kernel_size={kernel_size} is larger than the image {tuple(spatial)}")


def patch_matrix(images: Tensor, kernel_size: int) -> Tensor:
    """(B, C, H, W) real -> (B * H * W, C * k * k): row b * H * W + y * W + x is the zero-padded k x k patch
    centred on pixel (y, x) of image b, over all channels, ordered like a Conv2d weight (C, k, k)."""
    if images.dim() != 4 or images.is_complex():
        raise ValueError(f"convex model: expected real images (B, C, H, W), got shape {tuple(images.shape)} "
                         f"dtype {images.dtype}")
    check_kernel_size(kernel_size, tuple(images.shape[-2:]))
    cols = F.unfold(images, kernel_size, padding=kernel_size // 2)  # (B, C*k*k, H*W)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def pixel_matrix(images: Tensor) -> Tensor:
    """(B, C, H, W) -> (B * H * W, C): the pixels in the row order of :func:`patch_matrix`."""
    return images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])


def pixels_to_images(rows: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pixel_matrix` for images of shape (B, C, H, W)."""
    b, c, h, w = shape
    return rows.reshape(b, h, w, c).permute(0, 3, 1, 2)
