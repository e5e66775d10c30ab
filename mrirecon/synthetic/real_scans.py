"""Real brain scans shipped inside installed Python packages: the held-out real-anatomy test set.

These are magnitude images of real heads (not the MNI152 template that `--anatomy synth` and `mni152` draw
from), read from the installed wheels without importing the packages and never copied into this
repository. The generator turns them into fastMRI-layout test files with its own phase, coil and noise
models (`generator`, `--anatomy real`); they are for testing only: nothing in this framework trains or
tunes on them.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np

F32 = np.float32


class RealScan(NamedTuple):
    package: str          # the installed package that ships the file
    path: str             # the file inside the package
    frame: int            # which volume of a 4D file
    contrast: str         # what the scan shows (its sequence)
    acquisition: str      # the fastMRI acquisition it is closest to (attr `acquisition`)


# Axial brain scans, 2 mm in-plane. nibabel's is one volume of a BOLD fMRI run, dipy's the b = 0 image of a
# diffusion scan: two subjects, two scanners, both EPI (so no scalp: fat suppressed).
REAL_SCANS: dict[str, RealScan] = {
    "nibabel-epi": RealScan("nibabel", "tests/data/example4d.nii.gz", 0,
                            "T2*-weighted gradient-echo EPI (BOLD fMRI), 128 x 96 x 24, 2 x 2 x 2.2 mm", "AXT2"),
    "dipy-b0": RealScan("dipy", "data/files/S0_10slices.nii.gz", 0,
                        "T2-weighted spin-echo EPI (diffusion, b = 0), 128 x 128 x 10, 2 x 2 mm", "AXT2"),
}


def scan_file(name: str) -> Path:
    """The scan's file inside its installed package (the package is not imported)."""
    if name not in REAL_SCANS:
        raise ValueError(f"unknown real scan {name!r}; known: {', '.join(REAL_SCANS)}")
    scan = REAL_SCANS[name]
    spec = importlib.util.find_spec(scan.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"real scan {name!r} ships inside the {scan.package} package, which is not "
                                  "installed: pip install -r requirements.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / scan.path
    if not path.is_file():
        raise FileNotFoundError(f"real scan {name!r}: {path} is missing ({scan.package} version without it?)")
    return path


@functools.lru_cache(maxsize=None)
def load_scan(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) float32 magnitude in RAS orientation (x left->right, y posterior->anterior, z inferior->
    superior), scaled so that its 99.5th percentile is 1, and its voxel size (mm) in x and y."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(scan_file(name)))
    data = np.asarray(img.dataobj, dtype=F32)
    if data.ndim == 4:
        data = data[..., REAL_SCANS[name].frame]
    data = np.maximum(data, 0)
    return data / F32(np.percentile(data, 99.5)), np.asarray(img.header.get_zooms()[:2], F32)


def brain2d_real(rng: np.random.Generator, name: str, slices: int, shape: tuple[int, int] = (64, 64),
                 fov_mm: float = 220.0) -> tuple[np.ndarray, dict]:
    """Axial stack (slices, H, W) float32 magnitude from the real scan `name` (rows anterior->posterior,
    columns left->right, slices inferior->superior), and what was drawn.

    A random run of `slices` consecutive native slices; in plane, the scan resampled to the recon grid
    (`fov_mm` / max(shape) pixels, anti-aliased by a Gaussian) under a random rotation (+-8 degrees), shift
    (+-6 mm) and scaling (+-5%) about the slab's centre of mass."""
    from scipy import ndimage

    data, zoom = load_scan(name)
    if data.shape[2] < slices:
        raise ValueError(f"real scan {name!r} has {data.shape[2]} slices, fewer than --slices {slices}")
    start = int(rng.integers(0, data.shape[2] - slices + 1))
    slab = data[..., start:start + slices]
    angle, shift, scale = rng.uniform(-8, 8), rng.uniform(-6, 6, 2), rng.uniform(0.95, 1.05)
    pix = fov_mm / max(shape)
    centre = np.array(ndimage.center_of_mass(slab.mean(-1)), F32)  # (x, y) voxel index
    H, W = shape
    rows = ((H // 2) - np.arange(H)) * pix          # top row anterior (+y)
    cols = (np.arange(W) - (W // 2)) * pix          # left to right (+x)
    x, y = np.meshgrid(cols, rows)                  # (H, W) mm about the centre
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    xs, ys = (c * x - s * y) / scale + shift[0], (s * x + c * y) / scale + shift[1]
    idx = np.stack([centre[0] + xs / zoom[0], centre[1] + ys / zoom[1]])
    sigma = 0.5 * np.sqrt(np.maximum((pix / scale / zoom) ** 2 - 1, 0))  # in native voxels
    img = np.empty((slices, H, W), F32)
    for k in range(slices):
        smooth = ndimage.gaussian_filter(slab[..., k], sigma, mode="constant")
        img[k] = ndimage.map_coordinates(smooth, idx, order=1, mode="constant", cval=0.0, output=F32)
    draw = {"scan": name, "first_slice": start, "rotation_deg": float(angle), "shift_mm": [float(v) for v in shift],
            "scale": float(scale)}
    return img, draw
