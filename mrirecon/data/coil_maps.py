"""ESPIRiT coil maps, computed once per file and kept in a cache folder: input files are never written.

    python -m mrirecon.data.coil_maps --data DIR [--cache DIR] [--calib-width 20] [--num-maps 1] [--workers 2]

DIR may be a split folder or a dataset root with train/val/test sub-folders; it may be read-only.
Maps are computed per slice (per ky-kz slice for knee3d, from the frame-averaged k-space for cine) from
the central `calib-width` square of the fully sampled k-space, as precomputed-map pipelines (GLEAM,
meddlr) do; for files that hold undersampled k-space and their `mask` (fastMRI test/challenge files)
from the acquired calibration lines by the full readout (`calibration_region`).

The cache (default `~/.cache/mrirecon/maps`, or $MRIRECON_MAPS_CACHE, or `data.maps_cache`) holds one
HDF5 file per (input file, ESPIRiT settings): its name carries a hash of the file's resolved path, size
and modification time and of the settings, so an edited or replaced input file, or other settings, get
new maps, never stale ones. Each cache file is written atomically (temp file in the cache folder, then
rename): concurrent runs that build the same maps both write complete, identical files and the last
rename wins; a reader never sees half a file. Datasets build missing maps automatically (progress bar,
parallel workers). Maps already stored inside a data file (`espirit_maps`, older versions of this tool)
are still read and take precedence.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from ..atomic import atomic_path
from ..physics.espirit import espirit_maps
from . import layouts as L
from .cache import cache_folder, content_key
from .datasets import KINDS, inspect_file, list_h5
from .errors import DataError

CACHE_ENV = "MRIRECON_MAPS_CACHE"
CACHE_VERSION = 1  # bump when the maps computed for the same settings change


def default_cache_dir() -> Path:
    return cache_folder(None, CACHE_ENV, "maps")


@dataclass(frozen=True)
class EspiritSettings:
    calib_width: int = 20     # side of the central calibration square (fully sampled files)
    kernel_width: int = 6
    thresh: float = 0.02
    crop: float = 0.95        # eigenvalue threshold: maps are zero where the eigenvalue is <= crop
    num_maps: int = 1         # map sets (soft SENSE, model.num_maps)

    @classmethod
    def from_dict(cls, values: dict | None, num_maps: int | None = None) -> "EspiritSettings":
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"data.espirit: unknown setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if num_maps is not None:
            values["num_maps"] = num_maps
        return cls(**values)


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


def calibration_region(mask: np.ndarray | None, spatial: tuple[int, ...], calib_width: int,
                       kernel_width: int, readout_extent: int = 32) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(calibration extent, kernel size) per spatial dim (the last two) for ESPIRiT.

    No mask (fully sampled): the central calib_width square. A 1D line mask (readout fully sampled): the
    contiguous centre lines by up to `readout_extent` readout points; a 2D mask: the sampled centre square.
    The kernel shrinks to fit small regions (fastMRI brain's 4% of 128 columns = 5 lines -> a 3-wide
    kernel); fewer than 3 lines is refused with a message naming the count.
    """
    import torch

    from .transforms import acs_width

    if mask is None:
        c = min(calib_width, *spatial)
        return (c, c), (min(kernel_width, c - 1),) * 2
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    width = acs_width(m)
    if width < 3:
        raise ValueError(f"the mask's fully sampled calibration region is {width} line(s) wide; ESPIRiT needs "
                         "at least 3 (use a larger center fraction, or maps from fully sampled data)")
    line_mask = m.reshape(-1, *m.shape[-2:]).shape[-2] == 1 if m.dim() >= 2 else True
    kernel = min(kernel_width, width - 2)
    if line_mask:
        rows = min(spatial[-2], max(readout_extent, width))
        return (rows, width), (min(kernel_width, rows - 1), kernel)
    return (width, width), (kernel, kernel)


def compute_file_maps(path: Path, kind: str, settings: EspiritSettings) -> np.ndarray:
    """(slices, M, C, *spatial) complex64 maps of one file."""
    layout = L.LAYOUTS[kind]
    inspect_file(path, layout)  # clear error on a malformed file before any work
    with h5py.File(path, "r") as f:
        kspace = f[L.KSPACE]
        mask = f["mask"][()] if "mask" in f else None
        if mask is not None and mask.ndim == 1:
            mask = mask[None, :]  # (W,) -> (1, W): columns of a fully sampled readout
        out = []
        for s in range(kspace.shape[0]):
            k = kspace[s]
            if kind == "cine":
                k = k.mean(0)  # frame-averaged, fully sampled (T, C, H, W) -> (C, H, W)
            if not np.isfinite(k).all():
                raise DataError(path, f"NaN or Inf in k-space (slice {s})", key=L.KSPACE)
            try:
                calib, kernel = calibration_region(mask, k.shape[-2:], settings.calib_width, settings.kernel_width)
            except ValueError as e:
                raise DataError(path, str(e), key="mask") from None
            out.append(espirit_maps(k, calib_width=calib, kernel_width=kernel, thresh=settings.thresh,
                                    crop=settings.crop, num_maps=settings.num_maps))
    maps = np.stack(out).astype(np.complex64)
    if not np.abs(maps).max() > 0:
        raise DataError(path, "ESPIRiT found no coil sensitivity (all maps zero): is the calibration region "
                        "fully sampled?", key=L.KSPACE)
    return maps


def file_identity(path: Path) -> dict:
    """What makes cached maps valid for a file: its resolved path, size and modification time (ns)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class MapCache:
    """Coil maps per (input file identity, kind, ESPIRiT settings) in `folder` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike | None = None, settings: EspiritSettings | None = None):
        self.folder = cache_folder(folder, CACHE_ENV, "maps")
        self.settings = settings or EspiritSettings()

    def key(self, path: Path, kind: str) -> str:
        ident = {**file_identity(path), "kind": kind, "settings": asdict(self.settings), "version": CACHE_VERSION}
        return content_key(ident)

    def path_for(self, path: Path, kind: str) -> Path:
        return self.folder / f"{path.stem}-{self.key(path, kind)[:20]}.h5"

    def lookup(self, path: Path, kind: str) -> Path | None:
        cached = self.path_for(path, kind)
        return cached if cached.is_file() else None

    def build(self, path: Path, kind: str) -> Path:
        """Compute the maps of `path` and write them atomically into the cache; returns the cache file."""
        cached = self.path_for(path, kind)
        maps = compute_file_maps(path, kind, self.settings)
        try:
            with atomic_path(cached) as tmp:
                with h5py.File(tmp, "w") as f:
                    d = f.create_dataset(L.MAPS, data=maps)
                    d.attrs.update(asdict(self.settings))
                    f.attrs.update({**file_identity(path), "kind": kind, "version": CACHE_VERSION})
        except OSError as e:
            raise DataError(self.folder, f"cannot write the coil-map cache ({e}); set data.maps_cache "
                            f"(or ${CACHE_ENV}) to a writable folder") from None
        return cached

    def ensure(self, paths: Iterable[Path], kind: str, workers: int = 1, progress: bool = True) -> dict[Path, Path]:
        """Cache files for every path, building the missing ones (parallel workers, a progress bar)."""
        from tqdm import tqdm

        paths = list(paths)
        found = {p: self.lookup(p, kind) for p in paths}
        missing = [p for p, c in found.items() if c is None]
        if missing:
            desc = f"ESPIRiT maps -> {self.folder}"
            bar = tqdm(total=len(missing), desc=desc, unit="file", disable=None if progress else True)
            if workers > 1 and len(missing) > 1:
                with ProcessPoolExecutor(min(workers, len(missing))) as ex:
                    for p, c in zip(missing, ex.map(_build, [(self, p, kind) for p in missing])):
                        found[p] = c
                        bar.update()
            else:
                for p in missing:
                    found[p] = self.build(p, kind)
                    bar.update()
            bar.close()
        return found  # type: ignore[return-value]


def cache_for(data_cfg, num_maps: int) -> MapCache:
    """The map cache a `DataConfig` names (data.maps_cache, data.espirit) for `model.num_maps` map sets."""
    try:
        settings = EspiritSettings.from_dict(data_cfg.espirit, num_maps)
    except TypeError as e:
        raise ValueError(f"data.espirit: {e}") from None
    return MapCache(data_cfg.maps_cache, settings)


def _build(job: tuple[MapCache, Path, str]) -> Path:
    cache, path, kind = job
    return cache.build(path, kind)


def find_files(data: Path) -> list[Path]:
    splits = [data / s for s in L.SPLITS if (data / s).is_dir()]
    if splits:
        return [p for s in splits for p in list_h5(s)]
    return list_h5(data)


def cache_maps(data: str | os.PathLike, kind: str | None = None, calib_width: int = 20, kernel_width: int = 6,
               thresh: float = 0.02, crop: float = 0.95, workers: int = 1, overwrite: bool = False,
               verbose: bool = True, num_maps: int = 1, cache: str | os.PathLike | None = None) -> list[str]:
    """Compute the maps of every file under `data` into the cache folder; one status line per file.

    The data files are only read. `overwrite` recomputes maps already cached."""
    files = find_files(Path(data))
    mc = MapCache(cache, EspiritSettings(calib_width, kernel_width, thresh, crop, num_maps))
    lines = []
    jobs = [(p, kind or detect_kind(p)) for p in files]
    todo = [(p, k) for p, k in jobs if overwrite or mc.lookup(p, k) is None]
    done = {}
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(min(workers, len(todo))) as ex:
            done = dict(zip([p for p, _ in todo], ex.map(_build, [(mc, p, k) for p, k in todo])))
    else:
        done = {p: mc.build(p, k) for p, k in todo}
    for i, (p, k) in enumerate(jobs, 1):
        lines.append(f"{p.name}: maps cached in {done[p].name}" if p in done
                     else f"{p.name}: maps present in the cache, skipped")
        if verbose:
            print(f"[{i}/{len(jobs)}] {lines[-1]}", flush=True)
    return lines


def embed_maps(data: str | os.PathLike, kind: str | None = None, calib_width: int = 20, kernel_width: int = 6,
               thresh: float = 0.02, crop: float = 0.95, num_maps: int = 1) -> list[Path]:
    """Add `espirit_maps` inside files this framework generated (test fixtures, synthetic sets), atomically.

    Never for acquired data: that is what the cache is for. Returns the files rewritten."""
    settings = EspiritSettings(calib_width, kernel_width, thresh, crop, num_maps)
    written = []
    for p in find_files(Path(data)):
        maps = compute_file_maps(p, kind or detect_kind(p), settings)
        with atomic_path(p, copy_from=p) as tmp:
            with h5py.File(tmp, "r+") as f:
                if L.MAPS in f:
                    del f[L.MAPS]
                f.create_dataset(L.MAPS, data=maps).attrs.update(asdict(settings))
        written.append(p)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of .h5 files, or a root with train/val/test (read only)")
    p.add_argument("--cache", default=None, help=f"cache folder (default ${CACHE_ENV} or ~/.cache/mrirecon/maps)")
    p.add_argument("--kind", choices=KINDS, default=None, help="layout (detected from the file if omitted)")
    p.add_argument("--calib-width", type=int, default=20, help="side of the central calibration square")
    p.add_argument("--kernel-width", type=int, default=6)
    p.add_argument("--thresh", type=float, default=0.02)
    p.add_argument("--crop", type=float, default=0.95)
    p.add_argument("--num-maps", type=int, default=1, help="ESPIRiT map sets (model.num_maps)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--overwrite", action="store_true", help="recompute maps already cached")
    a = p.parse_args(argv)
    try:
        cache_maps(a.data, a.kind, a.calib_width, a.kernel_width, a.thresh, a.crop, a.workers, a.overwrite,
                   num_maps=a.num_maps, cache=a.cache)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
