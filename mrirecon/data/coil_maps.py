"""ESPIRiT coil maps, computed once per file and kept in a cache folder: input files are never written.

    mrirecon maps --data DIR [--cache DIR] [--calib-width 20] [--num-maps 1] [--workers 2] [--device cuda]

DIR may be a split folder or a dataset root with train/val/test sub-folders; it may be read-only.
Maps are computed per slice (per ky-kz slice for knee3d, from the frame-averaged k-space for cine) from
the central `calib-width` square of the fully sampled k-space, as precomputed-map pipelines (GLEAM,
meddlr) do; for files that hold undersampled k-space and their `mask` (fastMRI test/challenge files)
from the acquired calibration lines by the full readout (`calibration_region`). The ESPIRiT itself is
`mrirecon.physics.espirit` (one implementation; it reads only the calibration region, so only that region
of each file is read here).

The cache (default `~/.cache/mrirecon/maps`, or $MRIRECON_MAPS_CACHE, or `data.maps_cache`) holds one
HDF5 file per (file content, ESPIRiT settings): its name carries a SHA-256 of what the maps depend on, the
calibration region's k-space values of every slice, the k-space shape, the mask of a pre-undersampled file,
the data layout and the ESPIRiT settings (`MapCache.key`). A file replaced by another (even with the same
path, size and modification time: `cp -p`, `rsync -a`, `tar x`) gets new maps; a renamed or copied file
reuses them. Each cache file is written atomically (temp file in the cache folder, then rename):
concurrent runs that build the same maps both write complete, identical files and the last rename wins; a
reader never sees half a file. An entry that cannot be read back (a truncated or damaged file, another
shape) is rebuilt with a warning naming it; a cache folder that cannot be written is a DataError naming it.
Datasets build missing maps automatically (progress bar; parallel workers of one thread each on a CPU,
batched over slices on a GPU: `MapCache(device=...)`, CUDA when present). Maps already stored inside a data
file (`espirit_maps`, older versions of this tool) are still read and take precedence. `batch_maps`: online
maps of a batch on its device.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import h5py
import numpy as np
import torch

from ..atomic import atomic_path
from ..physics.espirit import CoarseMaps, espirit, espirit_coarse, expand_maps, time_average
from . import layouts as L
from .cache import cache_folder, content_key
from .errors import DataError
from .kinds import get_kind
from .maps_entry import STORES, check_entry, write_entry
from .masks import acs_width
from .readers.hdf5 import inspect_file, list_h5

CACHE_ENV = "MRIRECON_MAPS_CACHE"
CACHE_VERSION = 2  # bump when the maps computed for the same settings change (2: torch ESPIRiT, content keys)
# Working memory of one batch of slices (about 6 map-sized arrays at once): bounds a worker's peak.
BATCH_BYTES = {"cpu": 2 ** 29, "cuda": 2 ** 33}


def default_cache_dir() -> Path:
    return cache_folder(None, CACHE_ENV, "maps")


@dataclass(frozen=True)
class EspiritSettings:
    calib_width: int = 20     # side of the central calibration square (fully sampled files)
    kernel_width: int = 6
    thresh: float = 0.02
    crop: float = 0.95        # eigenvalue threshold: maps are zero where the eigenvalue is <= crop
    num_maps: int = 1         # map sets (soft SENSE, model.num_maps)
    coarse_grid: int | None = None  # eigenvectors on this many points per dim, interpolated (0: every pixel)

    @classmethod
    def from_dict(cls, values: dict | None, num_maps: int | None = None) -> "EspiritSettings":
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"data.espirit: unknown setting(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if num_maps is not None:
            values["num_maps"] = num_maps
        return cls(**values)

    def attrs(self) -> dict:
        """The settings as HDF5 attributes (which cannot hold None: the default coarse grid is "default")."""
        return {k: ("default" if v is None else v) for k, v in asdict(self).items()}


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
                       kernel_width: int, readout_extent: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(calibration extent, kernel size) per spatial dim (the last two) for ESPIRiT.

    No mask (fully sampled): the central calib_width square. A 1D line mask (readout fully sampled): the
    contiguous centre lines by the full readout (or `readout_extent` points: a calibration matrix with many
    more rows than its C x kernel columns, which a few lines by a short stretch of readout is not; the
    batched ESPIRiT makes the full readout cheap, results/coil_maps/NOTES.md); a 2D mask: the sampled centre
    square.
    The kernel shrinks to fit small regions (fastMRI brain's 4% of 128 columns = 5 lines -> a 3-wide
    kernel); fewer than 3 lines is refused with a message naming the count.
    """
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
        rows = spatial[-2] if readout_extent is None else min(spatial[-2], max(readout_extent, width))
        return (rows, width), (min(kernel_width, rows - 1), kernel)
    return (width, width), (kernel, kernel)


def batch_maps(kspace: torch.Tensor, mask: torch.Tensor, espirit_settings: dict | None = None,
               fft_ndim: int = 2) -> torch.Tensor:
    """Online maps of a batch, on its device: (B, M, C, *S) from undersampled k-space (B, C, *S) and its mask
    (broadcastable to it), from the centre region every sample acquired (`calibration_region`). Cine k-space
    (B, C, T, H, W) gives maps (B, M, C, 1, H, W) shared by the frames, from the frame average; fft_ndim 3:
    whole volumes (B, C, X, Y, Z) from the sampled centre cube. `espirit_settings`: data.espirit
    (calib_width unused: the mask decides; kernel_width defaults to 4, online regions are often small).
    ValueError when the acquired calibration region is too small."""
    cfg = {"kernel_width": 4, **{k: v for k, v in (espirit_settings or {}).items() if k != "calib_width"}}
    kernel_width = cfg.pop("kernel_width")
    m = mask.detach().float().cpu()
    if fft_ndim == 3:  # whole volumes: the sampled centre cube
        width = acs_width(m)
        return espirit(kspace, width, min(kernel_width, width - 1), ndim=3, **cfg).maps
    calib, kernel = calibration_region(m.reshape(-1, *m.shape[-2:]).numpy(), tuple(kspace.shape[-2:]), 0,
                                       kernel_width)
    if kspace.dim() == 5:  # cine (B, C, T, H, W): frame-averaged k-space
        return espirit(time_average(kspace, dim=2), calib, kernel, **cfg).maps.unsqueeze(3)
    return espirit(kspace, calib, kernel, **cfg).maps


class Calibration(NamedTuple):
    """What the maps of one file depend on: its calibration regions (slices, C, *calib) (frame-averaged for
    cine), the spatial shape of a slice, the kernel, and the content key of all of it."""

    region: np.ndarray
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    key: str


def read_calibration(path: Path, kind: str, settings: EspiritSettings) -> Calibration:
    """Read only the calibration region of every slice of `path` (its content key: `MapCache.key`)."""
    layout = get_kind(kind).layout
    try:
        with h5py.File(path, "r") as f:
            if L.KSPACE not in f:
                raise DataError(path, "missing key", key=L.KSPACE)
            kspace = f[L.KSPACE]
            shape, spatial = tuple(kspace.shape), tuple(kspace.shape[-2:])
            if len(shape) != layout.kspace_ndim:
                raise DataError(path, f"{len(shape)}-d k-space {shape}, expected {layout.kspace_ndim}-d for {kind}",
                                key=L.KSPACE)
            mask = f["mask"][()] if "mask" in f else None
            if mask is not None and mask.ndim == 1:
                mask = mask[None, :]  # (W,) -> (1, W): columns of a fully sampled readout
            try:
                calib, kernel = calibration_region(mask, spatial, settings.calib_width, settings.kernel_width)
            except ValueError as e:
                raise DataError(path, str(e), key="mask") from None
            rows, cols = (slice(n // 2 - c // 2, n // 2 - c // 2 + c) for n, c in zip(spatial, calib))
            region = kspace[..., rows, cols]
    except OSError as e:
        raise DataError(path, f"cannot read k-space (truncated or corrupt?): {e}") from None
    if not np.isfinite(region).all():
        s = int(np.nonzero(~np.isfinite(region).reshape(len(region), -1).all(1))[0][0])
        raise DataError(path, f"NaN or Inf in k-space (slice {s})", key=L.KSPACE)
    digest = hashlib.sha256(np.ascontiguousarray(region).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
    # The layout, not the kind's name: knee2d and brain2d files (one fastMRI layout) get the same maps, so
    # `mrirecon maps` on a brain folder (detected by layout) serves a brain2d run.
    identity = {"layout": layout.name, "shape": list(shape), "dtype": str(region.dtype), "calibration": digest.hexdigest(),
                "settings": asdict(settings), "version": CACHE_VERSION}
    if layout is L.CINE:  # (S, T, C, *calib): one map set per slice from the frame average
        region = time_average(torch.from_numpy(region), dim=1).numpy()
    return Calibration(region, spatial, kernel, content_key(identity))


def compute_file_maps(path: Path, kind: str, settings: EspiritSettings, device: str | torch.device | None = None,
                      calibration: Calibration | None = None, coarse: bool = False
                      ) -> Iterator[np.ndarray | CoarseMaps]:
    """The (slices, M, C, *spatial) complex64 maps of one file, a batch of slices at a time (bounded memory),
    computed on `device` (default: CPU); `coarse`: ESPIRiT's coarse eigenvectors instead (`CoarseMaps` on the
    CPU, `expand_maps` makes the same maps). DataError when no slice has a coil sensitivity."""
    inspect_file(path, get_kind(kind).layout)  # clear error on a malformed file before any work
    cal = calibration or read_calibration(path, kind, settings)
    device = torch.device(device or "cpu")
    S, C = cal.region.shape[:2]
    per_slice = 6 * 8 * settings.num_maps * C * int(np.prod(cal.spatial))
    batch = max(1, BATCH_BYTES.get(device.type, BATCH_BYTES["cpu"]) // per_slice)
    found = False
    for start in range(0, S, batch):
        region = torch.from_numpy(cal.region[start:start + batch]).to(device)
        grid = espirit_coarse(region, cal.spatial, cal.kernel, settings.thresh, settings.num_maps, settings.coarse_grid)
        if coarse:
            found = found or bool((grid.eig > settings.crop).any())
            yield CoarseMaps(grid.vectors.cpu(), grid.eig.cpu(), grid.image_shape)
            continue
        maps = expand_maps(grid, settings.crop).maps.cpu().numpy()
        found = found or bool(np.abs(maps).max() > 0)
        yield maps
    if not found:
        raise DataError(path, "ESPIRiT found no coil sensitivity (all maps zero): is the calibration region "
                        "fully sampled?", key=L.KSPACE)


def _read_entry(entry: Path, cal: Calibration, settings: EspiritSettings, slices: int, warn: bool = True) -> bool:
    """True if the cache file `entry` holds these maps (either form, `maps_entry`); False (with a warning
    naming it) if it is damaged."""
    expected = (slices, settings.num_maps, cal.region.shape[1], *cal.spatial)
    try:
        with h5py.File(entry, "r") as f:
            check_entry(f, expected)
            if f.attrs.get("key") != cal.key:
                raise ValueError("its key is not this file's")
    except (OSError, KeyError, ValueError) as e:
        if warn:
            warnings.warn(f"{entry}: damaged coil-map cache entry ({e}); building it again", stacklevel=3)
        return False
    return True


class MapCache:
    """Coil maps per (file content, layout, ESPIRiT settings) in `folder` (see the module docstring), computed
    on `device` (default: CUDA when present, else CPU), written in the form `store` (`maps_entry`: "coarse",
    about 1% of the maps, expanded when read; or "full"; maps computed at every pixel, coarse_grid 0, are
    always stored full)."""

    def __init__(self, folder: str | os.PathLike | None = None, settings: EspiritSettings | None = None,
                 device: str | torch.device | None = None, store: str = "coarse"):
        if store not in STORES:
            raise ValueError(f"maps store {store!r}: one of {list(STORES)}")
        self.folder = cache_folder(folder, CACHE_ENV, "maps")
        self.settings = settings or EspiritSettings()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.coarse = store == "coarse" and self.settings.coarse_grid != 0

    def key(self, path: Path, kind: str) -> str:
        """SHA-256 of what the maps depend on: calibration-region values, k-space shape, mask, layout, settings."""
        return read_calibration(Path(path), kind, self.settings).key

    def _entry(self, path: Path, key: str) -> Path:
        return self.folder / f"{Path(path).stem}-{key[:20]}.h5"

    def path_for(self, path: Path, kind: str) -> Path:
        return self._entry(path, self.key(path, kind))

    def lookup(self, path: Path, kind: str, calibration: Calibration | None = None) -> Path | None:
        """The cache file of `path`'s maps, or None if it is missing or damaged (a warning names it)."""
        cal = calibration or read_calibration(Path(path), kind, self.settings)
        entry = self._entry(path, cal.key)
        if not entry.is_file():
            return None
        return entry if _read_entry(entry, cal, self.settings, len(cal.region)) else None

    def build(self, path: Path, kind: str, overwrite: bool = False) -> Path:
        """Compute the maps of `path` and write them atomically into the cache; returns the cache file.
        Processes building the same entry at once both write complete, identical files; the last rename wins."""
        path = Path(path)
        cal = read_calibration(path, kind, self.settings)
        entry = self._entry(path, cal.key)
        if not overwrite and entry.is_file() and _read_entry(entry, cal, self.settings, len(cal.region), warn=False):
            return entry  # built by another process meanwhile (a damaged entry was named when it was looked up)
        return self._write(path, kind, cal, compute_file_maps(path, kind, self.settings, self.device, cal,
                                                              coarse=self.coarse))

    def store(self, path: Path, kind: str, maps: np.ndarray) -> Path:
        """Write known maps (slices, M, C, *spatial) as `path`'s entry (generated data whose coil sensitivities
        are known, benchmarks); returns the cache file."""
        path = Path(path)
        cal = read_calibration(path, kind, self.settings)
        expected = (len(cal.region), self.settings.num_maps, cal.region.shape[1], *cal.spatial)
        if tuple(maps.shape) != expected:
            raise ValueError(f"{path}: maps of shape {tuple(maps.shape)}, expected {expected}")
        return self._write(path, kind, cal, iter([maps]))

    def _write(self, path: Path, kind: str, cal: Calibration, batches: Iterable[np.ndarray | CoarseMaps]) -> Path:
        """Write the maps of `path`, a batch of slices at a time, atomically into its entry."""
        entry = self._entry(path, cal.key)
        try:
            with atomic_path(entry) as tmp:
                with h5py.File(tmp, "w") as f:
                    start = 0
                    for batch in batches:
                        start += write_entry(f, len(cal.region), batch, start, self.settings.attrs())
                    f.attrs.update({"source": str(path.resolve()), "kind": kind, "key": cal.key,
                                    "version": CACHE_VERSION})
        except OSError as e:
            raise DataError(self.folder, f"cannot write the coil-map cache ({e}); set data.maps_cache "
                            f"(or ${CACHE_ENV}) to a writable folder") from None
        return entry

    def ensure(self, paths: Iterable[Path], kind: str, workers: int = 1, progress: bool = True) -> dict[Path, Path]:
        """Cache files for every path, building the missing ones (parallel workers, a progress bar)."""
        from tqdm import tqdm

        paths = list(paths)
        found = {p: self.lookup(p, kind) for p in paths}
        missing = [p for p, c in found.items() if c is None]
        if missing:
            bar = tqdm(total=len(missing), desc=f"ESPIRiT maps -> {self.folder}", unit="file",
                       disable=None if progress else True)
            for p, c in self._build_all([(p, kind) for p in missing], workers):
                found[p] = c
                bar.update()
            bar.close()
        return found  # type: ignore[return-value]

    def _build_all(self, jobs: list[tuple[Path, str]], workers: int, overwrite: bool = False
                   ) -> Iterator[tuple[Path, Path]]:
        """Build every (path, kind): on a GPU in this process (batched over slices), else in `workers`
        processes of one thread each (ESPIRiT per slice is small: processes scale, threads do not)."""
        if workers > 1 and len(jobs) > 1 and self.device.type == "cpu":
            with ProcessPoolExecutor(min(workers, len(jobs)), initializer=_one_thread) as ex:
                yield from zip([p for p, _ in jobs], ex.map(_build, [(self, p, k, overwrite) for p, k in jobs]))
        else:
            for p, k in jobs:
                yield p, self.build(p, k, overwrite)


def cache_for(data_cfg, num_maps: int) -> MapCache:
    """The map cache a `DataConfig` names (data.maps_cache, data.espirit) for `model.num_maps` map sets."""
    try:
        settings = EspiritSettings.from_dict(data_cfg.espirit, num_maps)
    except TypeError as e:
        raise ValueError(f"data.espirit: {e}") from None
    return MapCache(data_cfg.maps_cache, settings, store=data_cfg.maps_store)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _build(job: tuple[MapCache, Path, str, bool]) -> Path:
    cache, path, kind, overwrite = job
    return cache.build(path, kind, overwrite)


def find_files(data: Path) -> list[Path]:
    """The .h5 files of a folder, or of its train/val/test folders (an empty split is skipped: a small
    dataset may have no test volume); DataError naming the folder when there are none."""
    splits = [s for s in (data / name for name in L.SPLITS) if s.is_dir() and any(s.glob("*.h5"))]
    if splits:
        return [p for s in splits for p in list_h5(s)]
    return list_h5(data)


def cache_maps(data: str | os.PathLike, kind: str | None = None, calib_width: int = 20, kernel_width: int = 6,
               thresh: float = 0.02, crop: float = 0.95, workers: int = 1, overwrite: bool = False,
               verbose: bool = True, num_maps: int = 1, cache: str | os.PathLike | None = None,
               device: str | None = None, coarse_grid: int | None = None, store: str = "coarse") -> list[str]:
    """Compute the maps of every file under `data` into the cache folder; one status line per file.

    The data files are only read. `overwrite` recomputes maps already cached. `device`: default CUDA when
    present (batched over slices), else CPU with `workers` processes. `store`: the entries' form (`MapCache`)."""
    files = find_files(Path(data))
    mc = MapCache(cache, EspiritSettings(calib_width, kernel_width, thresh, crop, num_maps, coarse_grid), device,
                  store)
    lines = []
    jobs = [(p, kind or detect_kind(p)) for p in files]
    todo = [(p, k) for p, k in jobs if overwrite or mc.lookup(p, k) is None]
    done = dict(mc._build_all(todo, workers, overwrite))
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
        maps = np.concatenate(list(compute_file_maps(p, kind or detect_kind(p), settings)))
        with atomic_path(p, copy_from=p) as tmp:
            with h5py.File(tmp, "r+") as f:
                if L.MAPS in f:
                    del f[L.MAPS]
                f.create_dataset(L.MAPS, data=maps).attrs.update(settings.attrs())
        written.append(p)
    return written
