"""ESPIRiT coil sensitivities (Uecker et al. 2014) via sigpy's EspiritCalib."""
from __future__ import annotations

import numpy as np


def espirit_maps(
    kspace: np.ndarray,
    calib_width: int = 16,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 30,
) -> np.ndarray:
    """Sensitivity maps (1, C, *S) complex64 from multi-coil k-space (C, *S).

    `calib_width` is the side of the (square/cubic) central calibration region; it must be fully
    sampled in `kspace` and larger than `kernel_width`. sigpy returns one set of maps (M = 1),
    normalised so that sum_c |S_c|^2 = 1 inside the support and zero outside (`crop`).
    """
    import sigpy.mri as mr  # imported lazily: sigpy/numba start-up is slow

    if calib_width <= kernel_width:
        raise ValueError(f"calib_width ({calib_width}) must exceed kernel_width ({kernel_width})")
    if min(kspace.shape[1:]) < calib_width:
        raise ValueError(f"calib_width ({calib_width}) larger than the k-space matrix {kspace.shape[1:]}")
    maps = mr.app.EspiritCalib(
        kspace, calib_width=calib_width, kernel_width=kernel_width, thresh=thresh, crop=crop,
        max_iter=max_iter, show_pbar=False,
    ).run()
    return np.asarray(maps, dtype=np.complex64)[None]
