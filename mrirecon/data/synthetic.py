"""Synthetic multi-coil MRI datasets, written in the on-disk layouts of `mrirecon.data.layouts`.

    python -m mrirecon.data.synthetic --kind knee2d --out data/synthetic/knee2d

Each volume: an anatomy-like complex image (`phantoms`), birdcage coil sensitivities normalised so that
sum_c |S_c|^2 = 1 (sigpy.mri.birdcage_maps), centred orthonormal FFT (the convention of
`mrirecon.physics.fftc`), plus complex Gaussian measurement noise. `reconstruction_rss` is computed from
the noisy, fully sampled k-space exactly as fastMRI does (RSS of the coil images, centre-cropped to the
recon size).

Noise: `noise` is relative to the signal. Every k-space sample gets circular complex Gaussian noise with
E|n|^2 = sigma^2, sigma = noise * max|image| of the volume (real and imaginary parts each sigma/sqrt 2).
The FFT is orthonormal, so each coil image carries the same sigma per pixel.

Volumes are split ~70/15/15 into train/val/test (each split gets at least one volume when there are
three or more) and numbered across splits (knee2d_000.h5, ...). Volume i depends only on (seed, kind, i).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from ..atomic import atomic_path
from . import phantoms
from .ismrmrd import make_header
from .layouts import CINE, FASTMRI, HEADER, KNEE3D, KSPACE, SPLITS, TARGET

KINDS = ("knee2d", "brain2d", "knee3d", "cine")

# Small enough that a demo trains on a 2-core CPU in minutes. size: recon (rH, rW) for knee2d/brain2d
# (k-space is (2 rH, rW): readout 2x oversampled), (X, Ky, Kz) for knee3d, (H, W) for cine.
DEFAULTS: dict[str, dict] = {
    "knee2d": dict(volumes=10, coils=8, slices=8, size=(64, 64), noise=0.01, zoom=1.0),
    "brain2d": dict(volumes=10, coils=8, slices=8, size=(64, 64), noise=0.01, zoom=1.0),
    "knee3d": dict(volumes=10, coils=8, size=(32, 64, 48), noise=0.01),
    "cine": dict(volumes=10, coils=8, slices=2, frames=12, size=(64, 64), noise=0.01),
}

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
             noise: float, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """Fully sampled k-space of n slabs (slices, or readout positions) and its RSS image.

    coil_images(i) gives slab i with coils on `coil_axis`; k-space is its FFT over the last two axes plus
    circular complex Gaussian noise of E|n|^2 = (noise * peak)^2. The RSS is taken from the noisy k-space,
    as fastMRI's targets are. One slab at a time keeps memory near the size of the output."""
    sigma = np.float32(noise * peak / np.sqrt(2.0))
    kspace = rss = None
    for i in range(n):
        k = centered_fft2(coil_images(i).astype(np.complex64))
        if noise > 0:
            k += sigma * (rng.standard_normal(k.shape, dtype=np.float32)
                          + 1j * rng.standard_normal(k.shape, dtype=np.float32))
        r = _rss(centered_fft2(k, inverse=True), axis=coil_axis)
        if kspace is None:
            kspace, rss = np.empty((n,) + k.shape, np.complex64), np.empty((n,) + r.shape, np.float32)
        kspace[i], rss[i] = k, r
    return kspace, rss


def _coil_maps(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Birdcage sensitivities (coils, *shape) with sum_c |S_c|^2 = 1; the coil ring radius varies."""
    import sigpy.mri  # slow to import (numba); only needed once volumes are made

    C = shape[0]
    maps = sigpy.mri.birdcage_maps(shape, r=rng.uniform(1.2, 1.8), nzz=min(C, 8), dtype=np.complex128)
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))).astype(np.complex64)


def _fastmri_volume(kind: str, rng: np.random.Generator, cfg: dict) -> tuple[dict, dict]:
    """knee2d / brain2d: image at recon size in a 2x longer readout FOV; target cropped back (fastMRI)."""
    slices, coils, (rH, rW) = cfg["slices"], cfg["coils"], cfg["size"]
    # zoom > 1: a smaller field of view on the same anatomy (it looks larger); same random draws.
    if kind == "knee2d":
        acq = str(rng.choice(KNEE_ACQUISITIONS))
        fov = phantoms.KNEE_FOV_MM / cfg.get("zoom", 1.0)
        img = phantoms.knee2d(rng, slices, (rH, rW), acq, fov_mm=fov)
    else:
        acq = str(rng.choice(list(BRAIN_ACQUISITIONS), p=list(BRAIN_ACQUISITIONS.values())))
        fov = phantoms.BRAIN_FOV_MM / cfg.get("zoom", 1.0)
        img = phantoms.brain2d(rng, slices, (rH, rW), acq, fov_mm=fov)
    H, W = 2 * rH, rW
    full = np.zeros((slices, H, W), np.complex64)
    full[:, (H - rH) // 2:(H - rH) // 2 + rH] = img
    maps = _coil_maps(rng, (coils, H, W))
    kspace, rss = _acquire(rng, lambda i: full[i] * maps, slices, FASTMRI.coil_axis - 1, cfg["noise"],
                           float(np.abs(img).max()))
    target = _center_crop(rss, (rH, rW))
    pix, thickness = fov / max(rH, rW), phantoms.slice_spacing_mm(kind, slices)
    header = make_header((H, W, 1), (rH, rW, 1), kspace_center=W // 2, kspace_max=W - 1,
                         fov_mm=(rH * pix, rW * pix, thickness), coils=coils, slices=slices)
    return {KSPACE: kspace, TARGET: target, HEADER: np.bytes_(header)}, {"acquisition": acq}


def _knee3d_volume(rng: np.random.Generator, cfg: dict) -> tuple[dict, dict]:
    """Hybrid (x, ky, kz) k-space: the readout is already inverse-transformed, each x is a 2D problem."""
    coils, shape = cfg["coils"], cfg["size"]
    acq = KNEE3D.acquisitions[0]
    img = phantoms.knee3d(rng, shape, acq)
    maps = _coil_maps(rng, (coils,) + tuple(shape))
    kspace, target = _acquire(rng, lambda x: img[x] * maps[:, x], shape[0], KNEE3D.coil_axis - 1, cfg["noise"],
                              float(np.abs(img).max()))
    return {KSPACE: kspace, TARGET: target}, {"acquisition": acq}


def _cine_volume(rng: np.random.Generator, cfg: dict) -> tuple[dict, dict]:
    slices, frames, coils, (H, W) = cfg["slices"], cfg["frames"], cfg["coils"], cfg["size"]
    img = phantoms.cine(rng, slices, frames, (H, W))
    rr_ms = rng.uniform(750.0, 1100.0)  # one heartbeat over the frames
    maps = _coil_maps(rng, (coils, H, W))
    kspace, target = _acquire(rng, lambda i: img[i][:, None] * maps, slices, CINE.coil_axis - 1, cfg["noise"],
                              float(np.abs(img).max()))
    return {KSPACE: kspace, TARGET: target}, {"acquisition": CINE.acquisitions[0], "frame_period_ms": rr_ms / frames}


def make_volume(kind: str, index: int, seed: int = 0, **settings) -> tuple[dict[str, np.ndarray], dict]:
    """Datasets and attrs of volume `index` of a synthetic `kind` set; depends only on (seed, kind, index)."""
    cfg = _config(kind, **settings)
    rng = np.random.default_rng([seed, KINDS.index(kind), index])
    if kind in ("knee2d", "brain2d"):
        data, attrs = _fastmri_volume(kind, rng, cfg)
    elif kind == "knee3d":
        data, attrs = _knee3d_volume(rng, cfg)
    else:
        data, attrs = _cine_volume(rng, cfg)
    target = data[TARGET]
    attrs.update(max=float(target.max()), norm=float(np.linalg.norm(target)),
                 patient_id=f"synthetic-{kind}-seed{seed}-{index:03d}")
    return data, attrs


def _config(kind: str, volumes: int | None = None, coils: int | None = None, slices: int | None = None,
            frames: int | None = None, size: tuple[int, ...] | None = None, noise: float | None = None,
            zoom: float | None = None) -> dict:
    """Defaults of `kind` overridden by the given settings, validated (ValueError names the setting)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
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
    return cfg


# fastMRI's pairs of acceleration and centre fraction (4x: 8% of the columns, 8x: 4%).
TEST_CENTER_FRACTIONS = {4: 0.08, 8: 0.04}


def undersample_for_test(data: dict, attrs: dict, name: str, acceleration: int) -> tuple[dict, dict]:
    """A fastMRI test/challenge file from a fully sampled one: k-space zeroed outside a random column
    mask (seeded from `name`), dataset `mask` (W,) bool, attrs `acceleration` and `num_low_frequency`,
    no `reconstruction_rss` (nor its max / norm attrs)."""
    import torch

    from .subsample import RandomMask1D, apply_mask, seed_from_name

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


def _prepare_folders(out: Path, overwrite: bool) -> dict[str, Path]:
    folders = {split: out / split for split in SPLITS}
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
             undersampled_test: int | None = None) -> dict[str, list[Path]]:
    """Write a synthetic `kind` dataset under out/{train,val,test}; returns the files per split.

    Unset settings take DEFAULTS[kind]. Raises FileExistsError (naming the folder) when a split folder is
    not empty and `overwrite` is False; with `overwrite`, the .h5 files already there are removed first.
    The same (kind, seed, settings) always gives byte-identical arrays. `progress`: a progress bar over
    the volumes (on a terminal). `undersampled_test` (knee2d/brain2d: 4 or 8): the test split is written
    as fastMRI's test/challenge files are (`undersample_for_test`), to be reconstructed, not scored."""
    cfg = _config(kind, volumes=volumes, coils=coils, slices=slices, frames=frames, size=size, noise=noise,
                  zoom=zoom)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    n = cfg.pop("volumes")
    if undersampled_test is not None and kind not in ("knee2d", "brain2d"):
        raise ValueError(f"--undersampled-test applies to knee2d and brain2d (fastMRI's layout), not {kind}")
    if undersampled_test is not None and undersampled_test not in TEST_CENTER_FRACTIONS:
        raise ValueError(f"--undersampled-test: acceleration {undersampled_test} is not one of fastMRI's "
                         f"{sorted(TEST_CENTER_FRACTIONS)}")  # checked before any file is written
    folders = _prepare_folders(Path(out), overwrite)
    files: dict[str, list[Path]] = {split: [] for split in SPLITS}
    from tqdm import tqdm

    splits = [split for split, count in zip(SPLITS, split_counts(n)) for _ in range(count)]
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


def _parser() -> argparse.ArgumentParser:
    defaults = "\n".join(f"  {k:8s} " + ", ".join(f"{n}={v}" for n, v in d.items()) for k, d in DEFAULTS.items())
    p = argparse.ArgumentParser(
        prog="python -m mrirecon.data.synthetic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a synthetic multi-coil MRI dataset (anatomy-like phantoms, birdcage coils, noise) as\n"
            "DIR/train, DIR/val, DIR/test (~70/15/15) in the layouts of mrirecon/data/layouts.py:\n"
            "  knee2d, brain2d  fastMRI multi-coil: kspace (slices, coils, 2*rH, rW) complex64 (readout 2x\n"
            "                   oversampled), reconstruction_rss (slices, rH, rW), ismrmrd_header\n"
            "  knee3d           hybrid 3D: kspace (X, coils, Ky, Kz), readout already in image space,\n"
            "                   reconstruction_rss (X, Ky, Kz)\n"
            "  cine             kspace (slices, frames, coils, H, W), reconstruction_rss (slices, frames, H, W),\n"
            "                   frames span one heartbeat (attr frame_period_ms)\n"
            "attrs: acquisition, max, norm (of reconstruction_rss), patient_id."),
        epilog=(f"defaults:\n{defaults}\n\nexample:\n"
                "  python -m mrirecon.data.synthetic --kind knee2d --out data/synthetic/knee2d --volumes 20"))
    p.add_argument("--kind", required=True, choices=KINDS, help="anatomy and layout")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (split folders go inside)")
    p.add_argument("--volumes", type=int, help="number of volumes (files) over all splits")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same arrays (default 0)")
    p.add_argument("--coils", type=int, help="receive coils")
    p.add_argument("--slices", type=int, help="slices per volume (knee2d, brain2d, cine)")
    p.add_argument("--frames", type=int, help="cardiac frames over one heartbeat (cine)")
    p.add_argument("--size", type=int, nargs="+", metavar="N",
                   help="image size: rH rW (recon size; k-space is 2*rH x rW) for knee2d/brain2d, "
                        "X Ky Kz for knee3d, H W for cine")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="k-space noise std relative to the image maximum (complex, E|n|^2 = sigma^2)")
    p.add_argument("--zoom", type=float, metavar="Z",
                   help="knee2d/brain2d: field of view divided by Z, so the anatomy looks Z times larger (default 1)")
    p.add_argument("--undersampled-test", type=int, metavar="R", choices=sorted(TEST_CENTER_FRACTIONS),
                   help="knee2d/brain2d: write the test split as fastMRI's test files (undersampled k-space at R, "
                        "its `mask`, no reconstruction_rss)")
    p.add_argument("--layout", choices=("h5", "cmrxrecon"), default="h5",
                   help="cine only: cmrxrecon writes the CMRxRecon challenge layout (MATLAB v7.3 .mat files in "
                        "MultiCoil/Cine/TrainingSet/{FullSample,AccFactor04,08,10}/Pnnn, mrirecon/data/cmrxrecon.py)")
    p.add_argument("--overwrite", action="store_true", help="replace .h5 files in non-empty split folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> dict[str, list[Path]]:
    """Command-line entry point; returns the files written per split."""
    parser = _parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.layout == "cmrxrecon":  # the CMRxRecon challenge layout (issue 12)
        from .cmrxrecon import generate_cmrxrecon

        if args.kind != "cine" or args.zoom is not None or args.undersampled_test is not None:
            parser.exit(2, f"{parser.prog}: error: --layout cmrxrecon writes cine data only (--kind cine, "
                        "no --zoom / --undersampled-test)\n")
        try:
            files = generate_cmrxrecon(args.out, args.volumes, args.seed, overwrite=args.overwrite, coils=args.coils,
                                       slices=args.slices, frames=args.frames, noise=args.noise,
                                       size=None if args.size is None else tuple(args.size))
        except (ValueError, FileExistsError) as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        print(f"cine (cmrxrecon layout): wrote {sum(map(len, files.values()))} patients in "
              f"{time.perf_counter() - start:.1f} s under {args.out}/{{train,val,test}}/MultiCoil/Cine/TrainingSet")
        return files
    try:
        files = generate(args.kind, args.out, args.volumes, args.seed, coils=args.coils, slices=args.slices,
                         frames=args.frames, size=None if args.size is None else tuple(args.size),
                         noise=args.noise, overwrite=args.overwrite, progress=not args.no_progress, zoom=args.zoom,
                         undersampled_test=args.undersampled_test)
    except (ValueError, FileExistsError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(f"{args.kind}: wrote {sum(map(len, files.values()))} volumes in {time.perf_counter() - start:.1f} s")
    print(summary(files))
    return files


if __name__ == "__main__":
    main(sys.argv[1:])
