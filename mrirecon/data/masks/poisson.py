"""Variable-density Poisson-disc ky-kz masks (3D data) and their banks.

Mask banks: B precomputed Poisson-disc ky-kz masks per setting, so training does not pay a Poisson-disc
draw (tens of ms at 64x48) for every slice.

Entry j of a bank is the mask `_poisson_mask` gives for seed j (that is sigpy.mri.poisson's mask
for seed j wherever sigpy returns), so a bank of 512 starts with the bank of 256. A training draw with seed
s picks its acceleration and then the entry from np.random.RandomState(s) (`PoissonMask2D`), so a run is
as deterministic as before and different slices and epochs still see different masks, out of B.

A bank is built once, on first use, and kept in a cache folder (`data.mask.bank_cache`, else
$MRIRECON_MASK_CACHE, else ~/.cache/mrirecon/masks) as one .npz per setting: the masks as packed bits,
their achieved accelerations and the settings. The file name carries a hash of every parameter that
defines the masks (ky-kz size, acceleration, calibration box, crop_corner, max_attempts, tol,
max_rel_error, max_reseeds, B, the sigpy version and `BANK_VERSION`). Processes that need the same bank
at once (DataLoader workers) build it once: the first takes a lock, the others wait for it and then read
the file; the file is written atomically, so a reader never sees half of it. Each process keeps the banks
it has read in memory. A damaged file is rebuilt, with a warning naming it; a cache folder that cannot be
written raises DataError (set another folder, or `data.mask.bank: 0`); a read-only folder holding a
complete bank is fine.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing
import numbers
import os
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ...atomic import atomic_path
from ..cache import build_lock, cache_folder, content_key
from ..errors import DataError
from .base import Mask, MaskFunc, check_accelerations, register_mask

CACHE_ENV = "MRIRECON_MASK_CACHE"
BANK_VERSION = 1  # bump when the masks stored for the same settings change
_POOL_MIN = 16    # smaller banks are built in this process (a pool's start-up would cost more)
_LOADED: dict[str, "MaskBank"] = {}  # banks this process has read or built, by file


class BankSettings(NamedTuple):
    """Everything that defines the masks of a bank (the arguments of `_poisson_mask`, less the seed)."""

    ny: int
    nx: int
    acceleration: float
    calib: tuple[int, int]
    crop_corner: bool
    max_attempts: int
    tol: float
    max_rel_error: float
    max_reseeds: int
    size: int  # B, masks in the bank

    def identity(self) -> dict:
        import sigpy

        return {**self._asdict(), "calib": list(self.calib), "sigpy": sigpy.__version__, "version": BANK_VERSION}


class MaskBank(NamedTuple):
    """masks: read-only bool (B, ny, nx), entry j drawn with seed j; accelerations: achieved, (B,)."""

    masks: np.ndarray
    accelerations: np.ndarray


def bank_path(settings: BankSettings, folder: str | os.PathLike | None = None) -> Path:
    """The cache file of a bank: readable settings, then a hash of all of them."""
    s = settings
    name = (f"poisson-{s.ny}x{s.nx}-R{s.acceleration:g}-calib{s.calib[0]}x{s.calib[1]}-B{s.size}-"
            f"{content_key(s.identity())[:20]}.npz")
    return cache_folder(folder, CACHE_ENV, "masks") / name


def load_bank(settings: BankSettings, folder: str | os.PathLike | None = None, progress: bool = True,
              workers: int = 2) -> MaskBank:
    """The bank for `settings`: from this process's memory, else from the cache file, else built (a progress
    bar on a terminal, `workers` processes where this process may start them) and stored."""
    path = bank_path(settings, folder)
    if str(path) in _LOADED:
        return _LOADED[str(path)]
    bank = _read(path, settings) if path.is_file() else None
    if bank is None:
        try:
            with build_lock(path):
                bank = _read(path, settings) if path.is_file() else None  # built while we waited?
                if bank is None:
                    bank = _build(settings, progress, workers)
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:
                        np.savez(f, masks=np.packbits(bank.masks.reshape(settings.size, -1), axis=1),
                                 accelerations=bank.accelerations, settings=json.dumps(settings.identity()))
        except OSError as e:
            raise DataError(path.parent, f"cannot write the mask bank cache ({e}); set data.mask.bank_cache "
                            f"(or ${CACHE_ENV}) to a writable folder, or data.mask.bank: 0 to draw every "
                            "training mask afresh") from None
    _LOADED[str(path)] = bank
    return bank


def _read(path: Path, settings: BankSettings) -> MaskBank | None:
    """The bank stored in `path`, or None (with a warning naming the file) if it is damaged or not this bank."""
    n, size = settings.ny * settings.nx, settings.size
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = json.loads(str(f["settings"]))
            packed, accels = f["masks"], f["accelerations"]
        if stored != settings.identity() or packed.shape != (size, (n + 7) // 8) or accels.shape != (size,):
            raise ValueError("its settings or array shapes are not those of this bank")
        masks = np.unpackbits(packed, axis=1, count=n).astype(bool).reshape(size, settings.ny, settings.nx)
        if not masks.reshape(size, -1).any(1).all():
            raise ValueError("a mask samples nothing")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"{path}: damaged mask bank ({e}); building it again", stacklevel=3)
        return None
    masks.setflags(write=False)
    return MaskBank(masks, accels.astype(np.float64))


def _entry(job: tuple[BankSettings, int]) -> tuple[np.ndarray, float]:
    s, j = job  # `_poisson_mask` is looked up at call time, so tests can replace the kernel
    return _poisson_mask(s.ny, s.nx, s.acceleration, s.calib, j, s.crop_corner, s.max_attempts, s.tol,
                                   s.max_rel_error, s.max_reseeds)


def _build(settings: BankSettings, progress: bool, workers: int) -> MaskBank:
    from tqdm import tqdm

    s = settings
    bar = tqdm(total=s.size, desc=f"Poisson mask bank {s.ny}x{s.nx} R={s.acceleration:g}", unit="mask",
               disable=None if progress else True)  # None: shown on a terminal only
    jobs = [(s, j) for j in range(s.size)]
    # DataLoader workers are daemon processes, which may not start processes of their own.
    if workers > 1 and s.size >= _POOL_MIN and not multiprocessing.current_process().daemon:
        first = _entry(jobs[0])  # compiles sigpy's kernel here, before the pool forks
        bar.update()
        with ProcessPoolExecutor(workers) as ex:
            entries = [first]
            for e in ex.map(_entry, jobs[1:], chunksize=8):
                entries.append(e)
                bar.update()
    else:
        entries = []
        for job in jobs:
            entries.append(_entry(job))
            bar.update()
    bar.close()
    masks = np.stack([m for m, _ in entries])
    masks.setflags(write=False)
    return MaskBank(masks, np.array([a for _, a in entries], dtype=np.float64))


@register_mask("poisson")
class PoissonMask2D(MaskFunc):
    """Variable-density Poisson-disc ky-kz mask with a fully sampled calibration box (sigpy).

    Used for 3D acquisitions decoupled along the fully sampled readout (GLEAM: 4x to 16x, 20x20
    calibration). Accepts ky-kz slices (C, Ky, Kz) -> mask (1, Ky, Kz) and whole volumes
    (C, X, Ky, Kz) -> (1, 1, Ky, Kz), one mask for every X. One acceleration is drawn per mask.

    The sampling is sigpy.mri.poisson's: Bridson's Poisson-disc with radius growing as 1 + s r
    (r = normalised distance outside the calibration box), corners beyond r = 1 dropped if
    `crop_corner`, the slope s found by bisection until |achieved - target| < `tol`. For a seed where
    sigpy.mri.poisson returns, the mask is identical to it. We run the bisection ourselves, on sigpy's
    kernel, because sigpy's loops forever once the bisection stalls between two adjacent floats
    without meeting `tol` (e.g. 24x20 at 8x, calib 4x4, seed 1; skm-tea issue #9); we then keep the
    closest mask if within `max_rel_error` of the target.

    sigpy's kernel never marks its random start point, so a seed whose start point falls inside the
    calibration box rejects every candidate around it and returns the box alone at every slope (about
    calib area / grid area of all seeds, e.g. 1 in 20 at 64x48 with 12x12; sigpy.mri.poisson spins
    forever on them). For such a seed, and any other that misses the target, the mask is drawn again
    from `_retry_seed(seed, k)`, k = 1 .. `max_reseeds`: still a pure function of the seed (fixed
    masks per file, the same in every process), and unchanged for every seed sigpy itself handles.
    ValueError if none reaches the target.

    Mask bank: a training draw (`training=True`) costs tens of ms at knee3d sizes, for every slice of
    every epoch, so it takes its mask from a bank of `bank` precomputed masks per (ky-kz size,
    acceleration, settings): entry j is the mask of seed j, and the draw's seed picks the acceleration
    and then j, both from np.random.RandomState(seed), so runs stay reproducible and slices and epochs
    still see different masks (out of `bank`). The bank is built once (a few seconds at 64x48, 256
    masks) and kept in `bank_cache` (default $MRIRECON_MASK_CACHE or ~/.cache/mrirecon/masks), see
    the module docstring. bank=0 draws every training mask afresh. Validation and test draws never use the
    bank: they keep the exact mask of their file's seed. Only this mask type has a bank: the others
    cost microseconds to draw.
    """

    sampled_dims = (-2, -1)
    ndims = (3, 4)
    layout = "(C, Ky, Kz) or (C, X, Ky, Kz)"

    def __init__(self, accelerations: Sequence[float], calib_size: Sequence[int] | int = (20, 20),
                 crop_corner: bool = True, max_attempts: int = 30, tol: float = 0.1,
                 max_rel_error: float = 0.1, max_reseeds: int = 8, bank: int = 256,
                 bank_cache: str | None = None):
        self.accelerations = check_accelerations(accelerations, minimum=1.0, strict=True)
        if isinstance(calib_size, numbers.Integral) and not isinstance(calib_size, bool):
            calib_size = (calib_size, calib_size)
        if (isinstance(calib_size, (str, bytes)) or not isinstance(calib_size, Sequence) or len(calib_size) != 2
                or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 2 for c in calib_size)):
            raise ValueError(f"calib_size must be two ints >= 2 (ky, kz; >= 2 so the centre is sampled), "
                             f"got {calib_size!r}")
        self.calib_size = (int(calib_size[0]), int(calib_size[1]))
        if not (isinstance(max_attempts, numbers.Integral) and max_attempts >= 1):
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if not 0 < max_rel_error < 1:
            raise ValueError(f"max_rel_error must be in (0, 1), got {max_rel_error!r}")
        self.crop_corner = bool(crop_corner)
        self.max_attempts = int(max_attempts)
        self.tol = float(tol)
        self.max_rel_error = float(max_rel_error)
        if not (isinstance(max_reseeds, numbers.Integral) and max_reseeds >= 0):
            raise ValueError(f"max_reseeds must be an int >= 0, got {max_reseeds!r}")
        self.max_reseeds = int(max_reseeds)
        if isinstance(bank, bool) or not isinstance(bank, numbers.Integral) or bank < 0:
            raise ValueError(f"bank must be an int >= 0 (masks per setting; 0: draw every training mask afresh), "
                             f"got {bank!r}")
        self.bank = int(bank)
        if bank_cache is not None and not isinstance(bank_cache, (str, os.PathLike)):
            raise ValueError(f"bank_cache must be a folder (a string) or null, got {bank_cache!r}")
        self.bank_cache = bank_cache

    def _draw_acceleration(self, shape: tuple[int, ...], rs: np.random.RandomState) -> float:
        ny, nx = shape[-2:]
        cy, cz = self.calib_size
        acceleration = self.accelerations[rs.randint(len(self.accelerations))]
        if cy >= ny or cz >= nx:
            raise ValueError(f"calib_size {self.calib_size} must be smaller than the ky-kz size {(ny, nx)}")
        if cy * cz * acceleration > ny * nx:
            raise ValueError(f"calib_size {self.calib_size} alone samples more than 1/{acceleration:g} of the "
                             f"{ny}x{nx} ky-kz locations: lower calib_size or accelerations")
        return float(acceleration)

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        ny, nx = shape[-2:]
        acceleration = self._draw_acceleration(shape, np.random.RandomState(seed))
        grid, accel = _poisson_mask(ny, nx, acceleration, self.calib_size, seed, self.crop_corner,
                                    self.max_attempts, self.tol, self.max_rel_error, self.max_reseeds)
        return self._mask(shape, grid, accel, acceleration)

    def _sample_training(self, shape: tuple[int, ...], seed: int) -> Mask:
        if self.bank == 0:
            return self._sample(shape, seed)
        rs = np.random.RandomState(seed)
        acceleration = self._draw_acceleration(shape, rs)
        entry = rs.randint(self.bank)  # the next draw of the same generator: independent of the acceleration's
        bank = load_bank(self.bank_settings(shape, acceleration), self.bank_cache)
        return self._mask(shape, bank.masks[entry], float(bank.accelerations[entry]), acceleration)

    def bank_settings(self, shape: Sequence[int], acceleration: float):
        """The `BankSettings` of this mask function's bank for ky-kz `shape[-2:]` at `acceleration`."""
        return BankSettings(int(shape[-2]), int(shape[-1]), float(acceleration), self.calib_size, self.crop_corner,
                            self.max_attempts, self.tol, self.max_rel_error, self.max_reseeds, self.bank)

    def _mask(self, shape: tuple[int, ...], grid: np.ndarray, accel: float, nominal: float) -> Mask:
        ny, nx = shape[-2:]
        mask = torch.from_numpy(grid.astype(np.float32)).reshape(*([1] * (len(shape) - 2)), ny, nx)
        return Mask(mask, accel, self.calib_size, nominal)


@functools.lru_cache(maxsize=512)
def _poisson_mask(ny: int, nx: int, acceleration: float, calib: tuple[int, int], seed: int, crop_corner: bool,
                  max_attempts: int, tol: float, max_rel_error: float, max_reseeds: int) -> tuple[np.ndarray, float]:
    """The (read-only bool grid, acceleration) of one Poisson-disc mask, a pure function of its arguments,
    so it is cached: every ky-kz slice of a validation/test file shares its file's seed and so its mask,
    which is drawn once per process instead of once per slice (~50 ms each at 64x48). Up to 512 masks."""
    for k in range(max_reseeds + 1):
        grid, accel = _poisson_disc(ny, nx, acceleration, calib, _retry_seed(seed, k), crop_corner, max_attempts, tol)
        if abs(accel - acceleration) <= max_rel_error * acceleration:
            grid.setflags(write=False)
            return grid, accel
    raise ValueError(f"PoissonMask2D: could not reach accelerations={acceleration:g} for ky-kz "
                     f"{ny}x{nx}, calib_size {calib} (closest {accel:.3f}, seed {seed} and "
                     f"{max_reseeds} seeds derived from it)")


def _retry_seed(seed: int, k: int) -> int:
    """The k-th seed for drawing a Poisson-disc mask again (k = 0: the seed itself); < 2**32 for numba."""
    if k == 0:
        return seed
    return int(np.random.SeedSequence([seed, k]).generate_state(1, np.uint32)[0])


def _poisson_disc(ny: int, nx: int, accel: float, calib: tuple[int, int], seed: int, crop_corner: bool,
                  max_attempts: int, tol: float, max_steps: int = 200) -> tuple[np.ndarray, float]:
    """sigpy.mri.poisson's slope bisection, bounded; returns (bool (ny, nx) mask, its acceleration)."""
    from sigpy.mri.samp import _poisson  # Bridson Poisson-disc kernel (numba); seeds its own generator

    # distance outside the calibration box per axis, normalised to [0, 1], as sigpy defines it
    dy = np.maximum(np.abs(np.arange(ny)[:, None] - ny / 2) - calib[0] / 2, 0)
    dx = np.maximum(np.abs(np.arange(nx)[None, :] - nx / 2) - calib[1] / 2, 0)
    r = np.sqrt((dx / dx.max()) ** 2 + (dy / dy.max()) ** 2)
    longest = max(nx, ny)
    low, high = 0.0, float(longest)
    best, best_accel = None, math.inf
    for _ in range(max_steps):
        slope = (low + high) / 2
        radius_x = np.clip((1 + r * slope) * nx / longest, 1, None)
        radius_y = np.clip((1 + r * slope) * ny / longest, 1, None)
        grid = _poisson(nx, ny, max_attempts, radius_x, radius_y, calib, seed)
        if crop_corner:
            grid *= r < 1
        achieved = nx * ny / np.sum(grid)
        if abs(achieved - accel) < abs(best_accel - accel):
            best, best_accel = grid, achieved
        if abs(achieved - accel) < tol or slope in (low, high):  # met, or stalled (sigpy would spin)
            break
        if achieved < accel:
            low = slope
        else:
            high = slope
        if not low < high:
            break
    return best > 0, float(best_accel)
