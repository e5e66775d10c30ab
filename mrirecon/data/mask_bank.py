"""Mask banks: B precomputed Poisson-disc ky-kz masks per setting, so training does not pay a Poisson-disc
draw (tens of ms at 64x48) for every slice.

Entry j of a bank is the mask `subsample._poisson_mask` gives for seed j (that is sigpy.mri.poisson's mask
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

import json
import multiprocessing
import os
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import atomic_path
from .cache import build_lock, cache_folder, content_key
from .errors import DataError

__all__ = ["MaskBank", "BankSettings", "CACHE_ENV", "BANK_VERSION", "bank_path", "load_bank"]

CACHE_ENV = "MRIRECON_MASK_CACHE"
BANK_VERSION = 1  # bump when the masks stored for the same settings change
_POOL_MIN = 16    # smaller banks are built in this process (a pool's start-up would cost more)
_LOADED: dict[str, "MaskBank"] = {}  # banks this process has read or built, by file


class BankSettings(NamedTuple):
    """Everything that defines the masks of a bank (the arguments of `subsample._poisson_mask`, less the seed)."""

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
    from . import subsample  # called at run time, so tests can replace the kernel

    s, j = job
    return subsample._poisson_mask(s.ny, s.nx, s.acceleration, s.calib, j, s.crop_corner, s.max_attempts, s.tol,
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
