"""Synthetic multi-coil MRI datasets, written in the on-disk layouts of `mrirecon.data.layouts`.

    mrirecon synth --kind knee2d --out data/synthetic/knee2d

Each volume: an anatomy-like complex image (`phantoms`: the built-in models, or for brain2d the MNI152
template (`anatomy="mni152"`), new brains synthesised from it (`"synth"`), or real scans shipped in
installed packages (`"real"`, `real_scans`)), the sensitivities of a loop-coil array (`_coil_maps`: drawn per
volume, not normalised, so the coil images carry a smooth bias field as real receive fields do), centred
orthonormal FFT (the convention of `mrirecon.physics.fftc`), plus complex Gaussian measurement noise.
`reconstruction_rss` is computed from the noisy, fully sampled k-space exactly as fastMRI does (RSS of the
coil images, centre-cropped to the recon size).

Noise: `noise` is the median level relative to the signal; each volume draws its level log-uniformly in
[noise / 2, 2 noise] (NOISE_SPREAD). k-space gets circular complex Gaussian noise with E|n|^2 = sigma^2
averaged over coils, sigma = level * max|image| of the volume (before the coils), white noise mixed
across coils by a random (C, C) matrix (`_coil_noise`: coil noise levels differ and neighbours
correlate). attrs `noise_level` and `noise_sigma` record the draw. The FFT is orthonormal, so each coil
image carries the same sigma per pixel as its k-space.

Volumes are split ~70/15/15 into train/val/test (each split gets at least one volume when there are
three or more) and numbered across splits (knee2d_000.h5, ...). Volume i depends only on (seed, kind, i).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from ..atomic import atomic_path
from ..data.ismrmrd import make_header
from ..data.kinds import get_kind, registered_kinds
from ..data.layouts import CINE, FASTMRI, HEADER, KNEE3D, KSPACE, SPLITS, TARGET
# By full module name: `from . import phantoms` names the package, whose __init__ imports this module (a circle to the import graph).
import mrirecon.synthetic.phantoms as phantoms
import mrirecon.synthetic.real_scans as real_scans

# Small enough that a demo trains on a 2-core CPU in minutes. size: recon (rH, rW) for knee2d/brain2d
# (k-space is (2 rH, rW): readout 2x oversampled), (X, Ky, Kz) for knee3d, (H, W) for cine.
DEFAULTS: dict[str, dict] = {
    "knee2d": dict(volumes=10, coils=8, slices=8, size=(64, 64), noise=0.01, zoom=1.0),
    "brain2d": dict(volumes=10, coils=8, slices=8, size=(64, 64), noise=0.01, zoom=1.0),
    "knee3d": dict(volumes=10, coils=8, size=(32, 64, 48), noise=0.01),
    "cine": dict(volumes=10, coils=8, slices=2, frames=12, size=(64, 64), noise=0.01),
}
# The data kinds (mrirecon/data/kinds.py) this generator synthesises; their order fixes each kind's random stream.
KINDS = tuple(DEFAULTS)

# Written into every file (attr `generator_version`): 2 = per-volume noise level, coil array with bias field,
# tissue and texture jitter (version 1, without the attr: fixed noise, normalised birdcage maps); 3 = the
# brain model's inner skull table (missing before), `--anatomy synth` contrasts half physical (sequences on
# relaxation times), half uniform.
GENERATOR_VERSION = 3

# Where the anatomy comes from: the built-in models (`phantoms`), or, for brain2d, the MNI ICBM152 2009a
# template read from the installed nilearn package (`phantoms.brain2d_mni152`), new brains synthesised from
# it (`phantoms.brain2d_synth`: random deformation, contrast, bias field, resolution), or real scans shipped
# inside installed packages (`real_scans`; test split only).
ANATOMIES = ("model", "mni152", "synth", "real")
# The randomisations of `--anatomy synth` that `synth_off` can switch off (for ablations).
SYNTH_PARTS = ("deformation", "contrast")

KNEE_ACQUISITIONS = ("CORPD_FBK", "CORPDFS_FBK")
# Roughly the mix of the fastMRI brain set (mostly T2 and post-contrast T1).
BRAIN_ACQUISITIONS = {"AXT2": 0.4, "AXFLAIR": 0.2, "AXT1POST": 0.2, "AXT1": 0.1, "AXT1PRE": 0.1}


def split_counts(volumes: int) -> tuple[int, int, int]:
    """(train, val, test) volume counts, ~70/15/15 with at least one each from three volumes on."""
    if volumes < 3:
        return volumes - (volumes == 2), int(volumes == 2), 0
    test = max(1, math.floor(0.15 * volumes))
    val = max(1, round(0.15 * volumes))
    return volumes - val - test, val, test


def centered_fft2(x: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Centred orthonormal 2D (i)FFT over the last two axes, the convention of `mrirecon.physics.fftc`.

    numpy's single-threaded pocketfft rather than torch: the result must not depend on the thread count,
    so that a seed gives byte-identical files on any machine (tests pin the convention to fftc)."""
    axes = (-2, -1)
    op = np.fft.ifftn if inverse else np.fft.fftn
    return np.fft.fftshift(op(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _rss(x: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt((x.real ** 2 + x.imag ** 2).sum(axis)).astype(np.float32)


def _center_crop(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    H, W = x.shape[-2:]
    h, w = shape
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def _acquire(rng: np.random.Generator, coil_images: Callable[[int], np.ndarray], n: int, coil_axis: int,
             noise: float, peak: float, coil_mixing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fully sampled k-space of n slabs (slices, or readout positions) and its RSS image.

    coil_images(i) gives slab i with coils on `coil_axis`; k-space is its FFT over the last two axes plus
    circular complex Gaussian noise of E|n|^2 = (noise * peak)^2, averaged over coils: white noise mixed
    across coils by `coil_mixing` (C, C) when given (`_coil_noise`). The RSS is taken from the noisy
    k-space, as fastMRI's targets are. One slab at a time keeps memory near the size of the output."""
    sigma = np.float32(noise * peak / np.sqrt(2.0))
    kspace = rss = None
    for i in range(n):
        k = centered_fft2(coil_images(i).astype(np.complex64))
        if noise > 0:
            white = sigma * (rng.standard_normal(k.shape, dtype=np.float32)
                             + 1j * rng.standard_normal(k.shape, dtype=np.float32))
            if coil_mixing is not None:
                white = np.moveaxis(np.tensordot(coil_mixing, np.moveaxis(white, coil_axis, 0), axes=1), 0, coil_axis)
            k += white.astype(np.complex64)
        r = _rss(centered_fft2(k, inverse=True), axis=coil_axis)
        if kspace is None:
            kspace, rss = np.empty((n,) + k.shape, np.complex64), np.empty((n,) + r.shape, np.float32)
        kspace[i], rss[i] = k, r
    return kspace, rss


# Per-volume noise floor: the level is log-uniform in [noise / NOISE_SPREAD, noise * NOISE_SPREAD], so that
# `noise` is its median (scanners, coils, voxel sizes and patients give different SNR).
NOISE_SPREAD = 2.0


def _noise_level(rng: np.random.Generator, noise: float) -> float:
    """This volume's noise level relative to its image maximum (drawn even for noise 0: same images)."""
    return float(noise * np.exp(rng.uniform(-np.log(NOISE_SPREAD), np.log(NOISE_SPREAD))))


def _coil_noise(rng: np.random.Generator, coils: int) -> np.ndarray:
    """(C, C) mixing L of white noise, so coil noise covariance L L^H: per-coil noise std varies ~15% and
    neighbouring receivers couple (correlations up to ~0.3, as in measured noise covariances); the mean
    of the diagonal of L L^H is 1, so the level is the coil-averaged one."""
    L = np.diag(np.exp(rng.normal(0.0, 0.15, coils)))
    couple = rng.uniform(0.05, 0.2) * (rng.standard_normal((coils, coils)) + 1j * rng.standard_normal((coils, coils)))
    L = L + np.triu(couple, 1) * (np.abs(np.subtract.outer(np.arange(coils), np.arange(coils))) <= 2)
    L = L / np.sqrt(np.mean((np.abs(L) ** 2).sum(1)))
    return L.astype(np.complex64)


def _coil_maps(rng: np.random.Generator, shape: tuple[int, ...], extent: tuple[int, ...] | None = None) -> np.ndarray:
    """Receive sensitivities (coils, *spatial) of a ring of loop coils around the object, NOT normalised to
    sum_c |S_c|^2 = 1: like real receive fields they leave a smooth intensity non-uniformity (brighter near
    the coils, ~2x darker in the centre). Spatial is (H, W) or (Z, H, W); the ring lies in the last two axes.

    Each volume draws its own array: ring rotation, elliptical semi-axes 1.1-1.6 and offset +-0.15 (in units
    of the object's half-size, `extent` pixels, default the grid; pixels are square), coil angles jittered,
    loop radii 0.7-1.1 (+-15% per coil), gains log-normal (15%), phases uniform, and coils out of the plane
    by +-0.3; 3D with 8 or more coils: two rings at +-(0.3-0.6) along Z. A loop of radius rho at distance d
    has |S| = (rho^2 / (rho^2 + d^2))^(3/2) (its on-axis field); the phase winds once around it. The maps are
    scaled so that the RMS of sqrt(sum_c |S_c|^2) over the object's disc is 1 (magnitudes O(1))."""
    C, spatial = shape[0], tuple(shape[1:])
    extent = tuple(extent) if extent is not None else spatial
    half = max(extent[-2:]) / 2.0
    axes = [(np.arange(n) - n // 2) / half for n in spatial]
    grid = np.meshgrid(*axes, indexing="ij")
    u, v = grid[-2], grid[-1]
    w = grid[0] if len(spatial) == 3 else np.zeros_like(u)

    theta0 = rng.uniform(0, 2 * np.pi)
    a = rng.uniform(1.1, 1.6)
    b = a * rng.uniform(0.75, 1.1)
    offset = rng.uniform(-0.15, 0.15, 2)
    rings = 2 if len(spatial) == 3 and C >= 8 else 1
    ring = np.arange(C) % rings
    per_ring = np.bincount(ring, minlength=rings)
    pos_in_ring = np.arange(C) // rings
    theta = (theta0 + 2 * np.pi * (pos_in_ring + 0.5 * ring) / per_ring[ring]
             + rng.normal(0, 0.1 * 2 * np.pi / C, C))
    if rings == 2:
        height = rng.uniform(0.3, 0.6)
        out_of_plane = np.where(ring == 0, height, -height) + rng.normal(0, 0.05, C)
    else:
        out_of_plane = rng.uniform(-0.3, 0.3, C)
    rho = rng.uniform(0.7, 1.1) * rng.uniform(0.85, 1.15, C)
    gain = np.exp(rng.normal(0, 0.15, C))
    phase = rng.uniform(0, 2 * np.pi, C)
    cu, cv = offset[0] + a * np.cos(theta), offset[1] + b * np.sin(theta)

    maps = np.empty(shape, np.complex64)
    for c in range(C):
        du, dv, dw = u - cu[c], v - cv[c], w - out_of_plane[c]
        mag = gain[c] * (rho[c] ** 2 / (rho[c] ** 2 + du ** 2 + dv ** 2 + dw ** 2)) ** 1.5
        maps[c] = mag * np.exp(1j * (np.arctan2(dv, du) + phase[c]))
    disc = (u ** 2 + v ** 2 <= 1) & (np.abs(w) <= 1)
    scale = np.sqrt(np.mean((np.abs(maps[:, disc]) ** 2).sum(0)))
    return (maps / scale).astype(np.complex64)


def _fastmri_volume(kind: str, rng: np.random.Generator, cfg: dict) -> tuple[dict, dict]:
    """knee2d / brain2d: image at recon size in a 2x longer readout FOV; target cropped back (fastMRI)."""
    slices, coils, (rH, rW) = cfg["slices"], cfg["coils"], cfg["size"]
    # zoom > 1: a smaller field of view on the same anatomy (it looks larger); same random draws.
    extra = {}
    if kind == "knee2d":
        acq = str(rng.choice(KNEE_ACQUISITIONS))
        fov = phantoms.KNEE_FOV_MM / cfg.get("zoom", 1.0)
        img = phantoms.knee2d(rng, slices, (rH, rW), acq, fov_mm=fov)
    else:
        acq = str(rng.choice(list(BRAIN_ACQUISITIONS), p=list(BRAIN_ACQUISITIONS.values())))
        fov = phantoms.BRAIN_FOV_MM / cfg.get("zoom", 1.0)
        anatomy = cfg.get("anatomy", "model")
        if anatomy == "mni152":
            img, affine = phantoms.brain2d_mni152(rng, slices, (rH, rW), acq, fov_mm=fov)
            extra["mni152_affine"] = affine  # (slice, row, col, 1) of reconstruction_rss -> MNI mm
        elif anatomy == "synth":
            off = cfg.get("synth_off", ())
            img, affine, draw = phantoms.brain2d_synth(rng, slices, (rH, rW), acq, fov_mm=fov,
                                                       deform="deformation" not in off,
                                                       random_contrast="contrast" not in off)
            extra.update(mni152_affine=affine, synth_draw=json.dumps(draw), synth_off=",".join(off))
        elif anatomy == "real":  # the shipped scans in turn
            name = list(real_scans.REAL_SCANS)[cfg["index"] % len(real_scans.REAL_SCANS)]
            scan = real_scans.REAL_SCANS[name]
            mag, draw = real_scans.brain2d_real(rng, name, slices, (rH, rW), fov_mm=fov)
            img = (mag * np.exp(1j * phantoms.stack_phase(rng, slices, (rH, rW)))).astype(np.complex64)
            acq = scan.acquisition
            extra.update(real_scan=name, real_scan_source=f"{scan.package}/{scan.path}",
                         real_scan_contrast=scan.contrast, real_scan_draw=json.dumps(draw))
        else:
            img = phantoms.brain2d(rng, slices, (rH, rW), acq, fov_mm=fov)
    H, W = 2 * rH, rW
    full = np.zeros((slices, H, W), np.complex64)
    full[:, (H - rH) // 2:(H - rH) // 2 + rH] = img
    maps = _coil_maps(rng, (coils, H, W), extent=(rH, rW))
    peak, level = float(np.abs(img).max()), _noise_level(rng, cfg["noise"])
    kspace, rss = _acquire(rng, lambda i: full[i] * maps, slices, FASTMRI.coil_axis - 1, level, peak,
                           _coil_noise(rng, coils))
    target = _center_crop(rss, (rH, rW))
    pix, thickness = fov / max(rH, rW), phantoms.slice_spacing_mm(kind, slices)
    header = make_header((H, W, 1), (rH, rW, 1), kspace_center=W // 2, kspace_max=W - 1,
                         fov_mm=(rH * pix, rW * pix, thickness), coils=coils, slices=slices)
    return ({KSPACE: kspace, TARGET: target, HEADER: np.bytes_(header)},
            {"acquisition": acq, **_noise_attrs(level, peak), **extra})


def _noise_attrs(level: float, peak: float) -> dict:
    """noise_level: this volume's drawn level relative to the image maximum; noise_sigma: the k-space noise
    std (E|n|^2 = sigma^2 per sample, averaged over coils)."""
    return {"noise_level": level, "noise_sigma": level * peak}


def _knee3d_volume(rng: np.random.Generator, cfg: dict) -> tuple[dict, dict]:
    """Hybrid (x, ky, kz) k-space: the readout is already inverse-transformed, each x is a 2D problem."""
    coils, shape = cfg["coils"], cfg["size"]
    acq = KNEE3D.acquisitions[0]
    img = phantoms.knee3d(rng, shape, acq)
    maps = _coil_maps(rng, (coils,) + tuple(shape))
    peak, level = float(np.abs(img).max()), _noise_level(rng, cfg["noise"])
    kspace, target = _acquire(rng, lambda x: img[x] * maps[:, x], shape[0], KNEE3D.coil_axis - 1, level, peak,
                              _coil_noise(rng, coils))
    return {KSPACE: kspace, TARGET: target}, {"acquisition": acq, **_noise_attrs(level, peak)}


def _cine_volume(rng: np.random.Generator, cfg: dict) -> tuple[dict, dict]:
    slices, frames, coils, (H, W) = cfg["slices"], cfg["frames"], cfg["coils"], cfg["size"]
    img = phantoms.cine(rng, slices, frames, (H, W))
    rr_ms = rng.uniform(750.0, 1100.0)  # one heartbeat over the frames
    maps = _coil_maps(rng, (coils, H, W))
    peak, level = float(np.abs(img).max()), _noise_level(rng, cfg["noise"])
    kspace, target = _acquire(rng, lambda i: img[i][:, None] * maps, slices, CINE.coil_axis - 1, level, peak,
                              _coil_noise(rng, coils))
    return {KSPACE: kspace, TARGET: target}, {"acquisition": CINE.acquisitions[0], "frame_period_ms": rr_ms / frames,
                                              **_noise_attrs(level, peak)}


def make_volume(kind: str, index: int, seed: int = 0, **settings) -> tuple[dict[str, np.ndarray], dict]:
    """Datasets and attrs of volume `index` of a synthetic `kind` set; depends only on (seed, kind, index)."""
    cfg = {**_config(kind, **settings), "index": index}
    rng = np.random.default_rng([seed, KINDS.index(kind), index])
    if get_kind(kind).layout is FASTMRI:
        data, attrs = _fastmri_volume(kind, rng, cfg)
    elif kind == "knee3d":
        data, attrs = _knee3d_volume(rng, cfg)
    else:
        data, attrs = _cine_volume(rng, cfg)
    target = data[TARGET]
    anatomy = cfg.get("anatomy", "model")
    tag = "-".join([anatomy] + ([attrs["real_scan"]] if "real_scan" in attrs else [])
                   + [f"no{part}" for part in cfg.get("synth_off", ())])
    attrs.update(max=float(target.max()), norm=float(np.linalg.norm(target)), anatomy=anatomy,
                 generator_version=GENERATOR_VERSION,
                 patient_id=f"synthetic-{kind}{'-' + tag if anatomy != 'model' else ''}-seed{seed}-{index:03d}")
    return data, attrs


def _config(kind: str, volumes: int | None = None, coils: int | None = None, slices: int | None = None,
            frames: int | None = None, size: tuple[int, ...] | None = None, noise: float | None = None,
            zoom: float | None = None, anatomy: str | None = None, synth_off: tuple[str, ...] | None = None) -> dict:
    """Defaults of `kind` overridden by the given settings, validated (ValueError names the setting)."""
    if kind not in KINDS:
        what = "no synthetic generator for data kind" if kind in registered_kinds() else "unknown kind"
        raise ValueError(f"{what} {kind!r}; choose one of {', '.join(KINDS)}")
    cfg = dict(DEFAULTS[kind])
    given = dict(volumes=volumes, coils=coils, slices=slices, frames=frames, size=size, noise=noise, zoom=zoom)
    for name, value in given.items():
        if value is None:
            continue
        if name not in cfg:
            hint = " (its slices are the first --size entry, X)" if kind == "knee3d" and name == "slices" else ""
            raise ValueError(f"--{name} does not apply to kind {kind}{hint}")
        cfg[name] = tuple(int(v) for v in value) if name == "size" else value
    for name in ("volumes", "coils", "slices", "frames"):
        if name in cfg and (int(cfg[name]) != cfg[name] or cfg[name] < 1):
            raise ValueError(f"--{name} must be a positive integer, got {cfg[name]!r}")
    want = len(DEFAULTS[kind]["size"])
    if len(cfg["size"]) != want or min(cfg["size"][-2:]) < 8 or min(cfg["size"]) < 1:
        raise ValueError(f"--size for {kind} needs {want} positive integers, the last two >= 8 "
                         f"({'X Ky Kz' if want == 3 else 'H W'}), got {cfg['size']}")
    if not (cfg["noise"] >= 0 and np.isfinite(cfg["noise"])):
        raise ValueError(f"--noise must be a finite number >= 0, got {cfg['noise']!r}")
    if "zoom" in cfg and not (cfg["zoom"] > 0 and np.isfinite(cfg["zoom"])):
        raise ValueError(f"--zoom must be a finite number > 0, got {cfg['zoom']!r}")
    if anatomy is not None and anatomy != "model":
        if anatomy not in ANATOMIES:
            raise ValueError(f"--anatomy must be one of {', '.join(ANATOMIES)}, got {anatomy!r}")
        if kind != "brain2d":
            source = "real brain scans" if anatomy == "real" else "brains from the MNI152 template"
            raise ValueError(f"--anatomy {anatomy} draws {source}: it applies to kind brain2d "
                             f"only, not {kind} (use --anatomy model)")
        cfg["anatomy"] = anatomy
    if synth_off:
        if cfg.get("anatomy") != "synth":
            raise ValueError(f"--synth-off switches off parts of --anatomy synth, not of --anatomy {anatomy or 'model'}")
        unknown = [part for part in synth_off if part not in SYNTH_PARTS]
        if unknown:
            raise ValueError(f"--synth-off: unknown part(s) {', '.join(unknown)}; choose from {', '.join(SYNTH_PARTS)}")
        cfg["synth_off"] = tuple(part for part in SYNTH_PARTS if part in synth_off)
    return cfg


# fastMRI's pairs of acceleration and centre fraction (4x: 8% of the columns, 8x: 4%).
TEST_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}


def undersample_for_test(data: dict, attrs: dict, name: str, acceleration: int) -> tuple[dict, dict]:
    """A fastMRI test/challenge file from a fully sampled one: k-space zeroed outside a random column
    mask (seeded from `name`), dataset `mask` (W,) bool, attrs `acceleration` and `num_low_frequency`,
    no `reconstruction_rss` (nor its max / norm attrs)."""
    import torch

    from ..data.masks import RandomMask1D, apply_mask, seed_from_name

    if acceleration not in TEST_CENTER_FRACTIONS:
        raise ValueError(f"--undersampled-test: acceleration {acceleration} is not one of fastMRI's "
                         f"{sorted(TEST_CENTER_FRACTIONS)}")
    kspace = data[KSPACE]
    width = kspace.shape[-1]
    m = RandomMask1D([TEST_CENTER_FRACTIONS[acceleration]], [acceleration])(kspace.shape[1:], seed=seed_from_name(name))
    under = apply_mask(torch.from_numpy(kspace), m.mask).numpy()
    out = {KSPACE: under, "mask": m.mask.reshape(width).numpy() > 0, HEADER: data[HEADER]}
    kept = {k: v for k, v in attrs.items() if k not in ("max", "norm")}
    return out, {**kept, "acceleration": int(acceleration), "num_low_frequency": int(m.num_low_frequencies)}


def _write_h5(path: Path, datasets: dict[str, np.ndarray], attrs: dict) -> None:
    """Write atomically: a temp file in the same folder (not ending in .h5), then os.replace."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as hf:
            for key, value in datasets.items():
                hf.create_dataset(key, data=value)
            hf.attrs.update(attrs)


def _prepare_folders(out: Path, overwrite: bool, splits=SPLITS) -> dict[str, Path]:
    """The split folders that will get files (only those are created, emptied with `overwrite`)."""
    folders = {split: out / split for split in splits}
    for folder in folders.values():
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder} exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise FileExistsError(f"output folder {folder} is not empty; pass --overwrite (overwrite=True) "
                                  f"to replace its .h5 files")
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        if overwrite:  # only files this generator could have written; anything else stays
            for old in list(folder.glob("*.h5")) + list(folder.glob(".*.h5.*.tmp")):
                old.unlink()
    return folders


def generate(kind: str, out: str | os.PathLike, volumes: int | None = None, seed: int = 0, *,
             coils: int | None = None, slices: int | None = None, frames: int | None = None,
             size: tuple[int, ...] | None = None, noise: float | None = None,
             overwrite: bool = False, progress: bool = False, zoom: float | None = None,
             undersampled_test: int | None = None, anatomy: str | None = None,
             synth_off: tuple[str, ...] | None = None, test_only: bool = False) -> dict[str, list[Path]]:
    """Write a synthetic `kind` dataset under out/{train,val,test}; returns the files per split.

    Unset settings take DEFAULTS[kind]. Raises FileExistsError (naming the folder) when a split folder is
    not empty and `overwrite` is False; with `overwrite`, the .h5 files already there are removed first.
    The same (kind, seed, settings) always gives byte-identical arrays. `progress`: a progress bar over
    the volumes (on a terminal). `undersampled_test` (knee2d/brain2d: 4 or 8): the test split is written
    as fastMRI's test/challenge files are (`undersample_for_test`), to be reconstructed, not scored.
    `anatomy` (ANATOMIES): "mni152" draws brain2d volumes from the MNI152 template instead of the model,
    "synth" new brains from it (`synth_off`: SYNTH_PARTS of its randomisation switched off), "real" the
    real scans of `real_scans` in turn, all written into the test split (they are never for training).
    `test_only`: every volume goes into the test split (a held-out test set)."""
    cfg = _config(kind, volumes=volumes, coils=coils, slices=slices, frames=frames, size=size, noise=noise,
                  zoom=zoom, anatomy=anatomy, synth_off=synth_off)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    n = cfg.pop("volumes")
    if undersampled_test is not None and get_kind(kind).layout is not FASTMRI:
        raise ValueError(f"--undersampled-test applies to knee2d and brain2d (fastMRI's layout), not {kind}")
    if undersampled_test is not None and undersampled_test not in TEST_CENTER_FRACTIONS:
        raise ValueError(f"--undersampled-test: acceleration {undersampled_test} is not one of fastMRI's "
                         f"{sorted(TEST_CENTER_FRACTIONS)}")  # checked before any file is written
    splits = [split for split, count in zip(SPLITS, split_counts(n)) for _ in range(count)]
    if test_only or cfg.get("anatomy") == "real":
        splits = ["test"] * n
    folders = _prepare_folders(Path(out), overwrite, ["test"] if set(splits) == {"test"} else SPLITS)
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    from tqdm import tqdm

    for index, split in enumerate(tqdm(splits, desc=f"synthetic {kind}", unit="volume",
                                       disable=None if progress else True)):
        data, attrs = make_volume(kind, index, seed, **cfg)
        path = folders[split] / f"{kind}_{index:03d}.h5"
        if split == "test" and undersampled_test is not None:
            data, attrs = undersample_for_test(data, attrs, path.name, undersampled_test)
        _write_h5(path, data, attrs)
        files[split].append(path)
    return files


def summary(files: dict[str, list[Path]]) -> str:
    """Files per split, array shapes and size on disk."""
    lines, total = [], 0
    for split, paths in files.items():
        size = sum(p.stat().st_size for p in paths)
        total += size
        shapes = ""
        if paths:
            with h5py.File(paths[0], "r") as hf:
                ref = f"{TARGET} {hf[TARGET].shape}" if TARGET in hf else f"mask {hf['mask'].shape} (undersampled)"
                shapes = f"  kspace {hf[KSPACE].shape} {hf[KSPACE].dtype}, {ref}"
        folder = paths[0].parent if paths else split
        lines.append(f"{split:>5}: {len(paths):3d} files in {folder}{shapes}")
    lines.append(f"total {total / 2**20:.1f} MiB")
    return "\n".join(lines)
