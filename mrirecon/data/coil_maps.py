"""Compute ESPIRiT coil maps once and cache them in each HDF5 file under `espirit_maps`.

    python -m mrirecon.data.coil_maps --data DIR [--calib-width 20] [--workers 2] [--overwrite]

DIR may be a split folder or a dataset root with train/val/test sub-folders. Maps are computed
per slice (per ky-kz slice for knee3d, from the frame-averaged k-space for cine) from the central
`calib-width` square of the fully sampled k-space, as precomputed-map pipelines (GLEAM, meddlr) do.
For maps from each sample's own acquired calibration lines use `data.maps: online` instead.
Each file is rewritten atomically (copy, add the maps, rename): an interrupted run loses nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..physics.espirit import espirit_maps
from . import layouts as L
from .datasets import KINDS, inspect_file, list_h5
from .errors import DataError


def detect_kind(path: Path) -> str:
    with h5py.File(path, "r") as f:
        if L.KSPACE not in f:
            raise DataError(path, "missing key", key=L.KSPACE)
        ndim = f[L.KSPACE].ndim
        if ndim == 5:
            return "cine"
        if L.HEADER in f:
            return "knee2d"
        return "knee3d"


def compute_file_maps(path: Path, kind: str, calib_width: int, kernel_width: int, thresh: float,
                      crop: float) -> np.ndarray:
    layout = L.LAYOUTS[kind]
    inspect_file(path, layout)  # clear error on a malformed file before any work
    with h5py.File(path, "r") as f:
        kspace = f[L.KSPACE]
        out = []
        for s in range(kspace.shape[0]):
            k = kspace[s]
            if kind == "cine":
                k = k.mean(0)  # frame-averaged, fully sampled (T, C, H, W) -> (C, H, W)
            if not np.isfinite(k).all():
                raise DataError(path, f"NaN or Inf in k-space (slice {s})", key=L.KSPACE)
            out.append(espirit_maps(k, calib_width=calib_width, kernel_width=kernel_width, thresh=thresh, crop=crop))
    return np.stack(out).astype(np.complex64)


def write_maps(path: Path, maps: np.ndarray, attrs: dict) -> None:
    """Add `espirit_maps` to `path` atomically: the original stays intact until the rename."""
    with atomic_path(path, copy_from=path) as tmp:
        with h5py.File(tmp, "r+") as f:
            if L.MAPS in f:
                del f[L.MAPS]
            d = f.create_dataset(L.MAPS, data=maps)
            d.attrs.update(attrs)


def _process(args: tuple) -> str:
    path, kind, cfg, overwrite = args
    with h5py.File(path, "r") as f:
        if L.MAPS in f and not overwrite:
            return f"{path.name}: maps present, skipped"
    maps = compute_file_maps(path, kind, **cfg)
    write_maps(path, maps, dict(cfg, num_maps=maps.shape[1], method="sigpy.mri.app.EspiritCalib"))
    return f"{path.name}: maps {maps.shape}"


def find_files(data: Path) -> list[Path]:
    splits = [data / s for s in L.SPLITS if (data / s).is_dir()]
    if splits:
        return [p for s in splits for p in list_h5(s)]
    return list_h5(data)


def cache_maps(data: str | os.PathLike, kind: str | None = None, calib_width: int = 20, kernel_width: int = 6,
               thresh: float = 0.02, crop: float = 0.95, workers: int = 1, overwrite: bool = False,
               verbose: bool = True) -> list[str]:
    """Compute and cache maps for every file under `data`; returns one status line per file."""
    files = find_files(Path(data))
    cfg = dict(calib_width=calib_width, kernel_width=kernel_width, thresh=thresh, crop=crop)
    jobs = [(p, kind or detect_kind(p), cfg, overwrite) for p in files]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = []
            for i, r in enumerate(ex.map(_process, jobs), 1):
                results.append(r)
                if verbose:
                    print(f"[{i}/{len(jobs)}] {r}", flush=True)
            return results
    results = []
    for i, job in enumerate(jobs, 1):
        results.append(_process(job))
        if verbose:
            print(f"[{i}/{len(jobs)}] {results[-1]}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of .h5 files, or a root with train/val/test")
    p.add_argument("--kind", choices=KINDS, default=None, help="layout (detected from the file if omitted)")
    p.add_argument("--calib-width", type=int, default=20, help="side of the central calibration square")
    p.add_argument("--kernel-width", type=int, default=6)
    p.add_argument("--thresh", type=float, default=0.02)
    p.add_argument("--crop", type=float, default=0.95)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--overwrite", action="store_true", help="recompute maps already cached")
    a = p.parse_args(argv)
    try:
        cache_maps(a.data, a.kind, a.calib_width, a.kernel_width, a.thresh, a.crop, a.workers, a.overwrite)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
