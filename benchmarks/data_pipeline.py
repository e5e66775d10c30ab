"""Benchmark: the data pipeline at fastMRI's real sizes, from disk to a batch, beside fastMRI's own loader.

    python benchmarks/data_pipeline.py --make-files        # the data files and maps, once, untimed
    flock /tmp/mrirecon-bench.lock python benchmarks/data_pipeline.py --out results/data_pipeline \
        [--data /tmp/mrirecon_fastmri_size] [--items 70] [--rounds 3] [--skip-espirit] [--shared "..."]
    python benchmarks/data_pipeline.py --out results/data_pipeline --only masks   # the mask bank part, < 1 min

Data: 2 files in the fastMRI multi-coil knee layout at its real size: k-space (35 slices, 15 coils, 640, 368)
complex64 (~0.99 GB each), reconstruction_rss (35, 320, 320), ISMRMRD header. Anatomy and coils come
from `mrirecon.synthetic` (5 generated slices repeated to 35: the loader's cost does not depend
on the content, and generating 35 phantom slices at this size takes minutes). The coil-map cache is
filled with the generator's own coil maps (ESPIRiT itself, a one-off cost per file that the maps cache pays
once, is timed here on one slice; benchmarks/coil_maps.py measures it in full).

Measured, each configuration in a fresh process (so its peak memory is its own), `--rounds` rounds with ours
and fastMRI's alternating (one run, same machine state; the median round is reported):
  - ours: the lean loader training uses: `ReconDataset` + `ReconTransform.load` through `EpochTagged`
    (read the slice, read its cached maps at the recon readout, draw the mask; tensors, no FFT) through a
    DataLoader, batch 1, 0 and 2 workers; `ours` from cache entries holding the maps at every pixel,
    `ours-coarse` from entries holding ESPIRiT's coarse eigenvectors (the default form), expanded on read;
  - fastMRI: `fastmri.data.SliceDataset` + `VarNetDataTransform` (the same mask family) on the same files;
  - slices per second over `--items` slices after one warm-up item; peak resident (RSS) and private (USS)
    memory of the main process and of the largest worker, sampled by a thread. The files are read through the OS page cache (warm after the first
    pass; the cache is not dropped on a shared machine);
  - our batch transform (`BatchTransform`, the device part: readout crop, masking, target, zero-filled image,
    scaling) per slice on this CPU, apart (on a GPU it runs on the training device, not in the loader).
Also: the Poisson-disc ky-kz mask draw (knee3d, 64 x 48, 4x, calib 20 x 20), uncached and from the cache
(`subsample._poisson_mask`) for the slices of one validation file.
Outputs: OUT/data_pipeline.json and OUT/data_pipeline.md, atomically, with command, date and machine.

`--only masks`: the Poisson-disc mask cost per training slice at knee3d's setting (configs/knee3d.yaml: ky-kz
64 x 48, 8x, calib 12 x 12), drawn afresh (`data.mask.bank: 0`) and from the mask bank (`mask_bank`, 256
masks); the bank's one-off build (into an empty cache folder, with 1 and with 2 processes) and a fresh
process's read of the bank file are timed apart. Outputs OUT/mask_bank.json and OUT/mask_bank.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

SLICES, COILS, READOUT, WIDTH, RECON = 35, 15, 640, 368, 320
DISTINCT = 5  # generated slices per file, repeated to SLICES
MASK = {"name": "random", "center_fractions": [0.08], "accelerations": [4]}


def maps_folder(folder: Path, store: str = "full") -> Path:
    """The maps cache beside the data folder (fastMRI's SliceDataset opens every entry of the folder), one per
    entry form (`mrirecon.data.maps_entry`; both forms of a file share one key, so they need two folders)."""
    return folder.parent / (f"{folder.name}_maps" if store == "full" else f"{folder.name}_maps_{store}")


def make_files(folder: Path) -> list[Path]:
    """The 2 fastMRI-size files (skipped when present with the right shape) and their cached maps."""
    import h5py
    import numpy as np

    from mrirecon.atomic import atomic_path
    from mrirecon.data.coil_maps import MapCache
    from mrirecon.data.ismrmrd import make_header
    from mrirecon.synthetic.generator import _acquire, _center_crop, _coil_maps, phantoms

    folder.mkdir(parents=True, exist_ok=True)
    cache = MapCache(maps_folder(folder))
    paths = []
    for i in range(2):
        path = folder / f"knee_fastmri_size_{i}.h5"
        paths.append(path)
        if path.is_file():
            with h5py.File(path) as f:
                if f["kspace"].shape == (SLICES, COILS, READOUT, WIDTH) and cache.lookup(path, "knee2d"):
                    continue
        rng = np.random.default_rng([7, i])
        img = phantoms.knee2d(rng, DISTINCT, (RECON, WIDTH), "CORPD_FBK")
        full = np.zeros((DISTINCT, READOUT, WIDTH), np.complex64)
        full[:, (READOUT - RECON) // 2:(READOUT - RECON) // 2 + RECON] = img
        maps = _coil_maps(rng, (COILS, READOUT, WIDTH))
        kspace, rss = _acquire(rng, lambda s: full[s] * maps, DISTINCT, 0, 0.01, float(np.abs(img).max()))
        order = [s % DISTINCT for s in range(SLICES)]
        header = make_header((READOUT, WIDTH, 1), (RECON, RECON, 1), kspace_center=WIDTH // 2,
                             kspace_max=WIDTH - 1, fov_mm=(140.0, 140.0 * WIDTH / RECON, 3.0), coils=COILS,
                             slices=SLICES)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("kspace", data=kspace[order])
                f.create_dataset("reconstruction_rss", data=_center_crop(rss, (RECON, RECON))[order])
                f.create_dataset("ismrmrd_header", data=np.bytes_(header))
                f.attrs.update(acquisition="CORPD_FBK", max=float(rss.max()), norm=float(np.linalg.norm(rss)),
                               patient_id=f"bench-{i}")
        cache.store(path, "knee2d", np.broadcast_to(maps[None, None], (SLICES, 1, *maps.shape)))
    # The default entry form: ESPIRiT's coarse eigenvectors, expanded when a slice is read (ESPIRiT itself, a
    # few seconds per file here; the generator's maps above have no coarse form).
    MapCache(maps_folder(folder, "coarse"), store="coarse").ensure(paths, "knee2d", progress=False)
    return paths


def _memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, USS) of process `pid` in MiB: resident, and private to it (what it allocated itself; a forked
    DataLoader worker's RSS also counts the pages it shares with its parent)."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = float(value.split()[0]) / 1024
    except (OSError, ValueError):
        return 0.0, 0.0
    return fields.get("Rss", 0.0), fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)


class MemorySampler:
    """Peak RSS and USS of this process and of each of the given worker processes, sampled every `period_s` by
    a thread (ru_maxrss would not do: a process started by exec inherits its parent's peak, and a forked
    worker's includes its parent's pages)."""

    def __init__(self, period_s: float = 0.02):
        import threading

        self.period_s, self.pids = period_s, {"process": os.getpid()}
        self.peak = {"process": (0.0, 0.0)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def watch(self, pids: list[int]) -> None:
        self.pids.update({f"worker{i}": pid for i, pid in enumerate(pids)})

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in list(self.pids.items()):
                rss, uss = _memory_mib(pid)
                old = self.peak.get(name, (0.0, 0.0))
                self.peak[name] = (max(old[0], rss), max(old[1], uss))
            self._stop.wait(self.period_s)

    def summary(self) -> dict[str, float | None]:
        workers = [v for k, v in self.peak.items() if k.startswith("worker")]
        return {"peak_process_rss_mib": self.peak["process"][0], "peak_process_uss_mib": self.peak["process"][1],
                "peak_worker_rss_mib": max(w[0] for w in workers) if workers else None,
                "peak_worker_uss_mib": max(w[1] for w in workers) if workers else None}


def dataset(loader: str, folder: Path):
    """What each side's DataLoader iterates (batch 1, what every worker does per slice):
    ours: `ReconDataset` + `ReconTransform.load` through `EpochTagged` (training's loader): read the k-space
      slice (h5py), read its cached maps at the recon readout (320 of 640 rows, from the maps cache), draw the
      random mask, hand over tensors; no FFT (readout crop, masking, target, zero-filled image, scaling are the
      batch transform's, on the training device);
    fastmri: `SliceDataset` + `VarNetDataTransform`: read the k-space slice and its `reconstruction_rss` target,
      to_tensor (a copy as real pairs), draw the random mask and apply it; no maps (VarNet estimates its own
      inside the model), no FFT."""
    if loader in ("ours", "ours-coarse"):
        from mrirecon.data.coil_maps import MapCache
        from mrirecon.data.datasets import ReconDataset
        from mrirecon.data.masks import build_mask_func
        from mrirecon.data.transforms import EpochTagged, ReconTransform

        transform = ReconTransform(build_mask_func(MASK), deterministic=False, target="rss")
        ds = ReconDataset(folder, "knee2d", transform, require_maps=True, scan_values=False, progress=False,
                          maps_cache=MapCache(maps_folder(folder, "coarse" if loader == "ours-coarse" else "full")))
        return EpochTagged(ds, transform)
    from fastmri.data import SliceDataset
    from fastmri.data.subsample import RandomMaskFunc
    from fastmri.data.transforms import VarNetDataTransform

    return SliceDataset(folder, challenge="multicoil",
                        transform=VarNetDataTransform(RandomMaskFunc([0.08], [4]), use_seed=False))


def run_loader(loader: str, folder: Path, workers: int, items: int) -> dict[str, Any]:
    """Worker mode: time one loader configuration in this (fresh) process."""
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    ds = dataset(loader, folder)
    dl = DataLoader(ds, batch_size=1, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))
    with MemorySampler() as memory:
        it = iter(dl)
        memory.watch([w.pid for w in getattr(it, "_workers", [])])
        next(it)  # warm-up: worker start-up, imports, first file open
        start = time.perf_counter()
        n = 0
        for _ in range(items):
            try:
                next(it)
            except StopIteration:  # (items > slices: a new epoch, new workers)
                it = iter(dl)
                memory.watch([w.pid for w in getattr(it, "_workers", [])])
                next(it)
            n += 1
        seconds = time.perf_counter() - start
        del it, dl
    return {"loader": loader, "workers": workers, "items": n, "seconds": seconds, "slices_per_s": n / seconds,
            **memory.summary()}


def run_batch_transform(folder: Path, items: int) -> dict[str, Any]:
    """Batch mode: the device part of ours (`BatchTransform`: readout crop, masking, target, zero-filled image,
    scaling), here on the CPU with one thread, per slice of batch 1 (on a GPU it runs beside training)."""
    import torch
    from torch.utils.data import DataLoader

    from mrirecon.data.transforms import BatchTransform

    torch.set_num_threads(1)
    prepare = BatchTransform(target="rss")
    batches = list(zip(range(min(items, 10)), DataLoader(dataset("ours", folder), batch_size=1, shuffle=True,
                                                        generator=torch.Generator().manual_seed(0))))
    prepare(batches[0][1])  # warm-up
    times = []
    for _, b in batches:
        start = time.perf_counter()
        prepare(b)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"items": len(times), "median_ms_per_slice": 1e3 * times[len(times) // 2]}


def poisson_mask_cost(slices: int = 32) -> dict[str, Any]:
    """ms per Poisson-disc ky-kz mask, uncached (every draw) and for a validation file's slices (cached)."""
    from mrirecon.data.masks import PoissonMask2D, seed_from_name
    from mrirecon.data.masks.poisson import _poisson_disc, _poisson_mask

    mf = PoissonMask2D([4], calib_size=(20, 20))
    shape = (8, 64, 48)
    _poisson_disc(64, 48, 4.0, (20, 20), 0, True, mf.max_attempts, mf.tol)  # numba compilation
    seeds = [seed_from_name("knee3d_000.h5", s) for s in range(8)]
    start = time.perf_counter()
    for s in seeds:
        _poisson_disc(64, 48, 4.0, (20, 20), s, True, mf.max_attempts, mf.tol)
    uncached = (time.perf_counter() - start) / len(seeds)
    _poisson_mask.cache_clear()
    seed = seed_from_name("knee3d_000.h5")
    start = time.perf_counter()
    for _ in range(slices):  # one validation file: every ky-kz slice has the file's mask
        mf(shape, seed=seed)
    per_slice = (time.perf_counter() - start) / slices
    return {"shape": [64, 48], "acceleration": 4, "calib": [20, 20], "uncached_ms_per_mask": 1e3 * uncached,
            "validation_file_slices": slices, "cached_ms_per_slice": 1e3 * per_slice}


def mask_bank_cost(draws: int = 64, bank: int = 256, epoch_slices: int = 224) -> dict[str, Any]:
    """ms per training-slice Poisson-disc mask at knee3d's setting: fresh draws vs the mask bank."""
    import tempfile

    from mrirecon.data.masks import PoissonMask2D, seed_from_name
    from mrirecon.data.masks import poisson as mask_bank
    from mrirecon.data.masks.poisson import _poisson_mask

    shape, accel, calib = (8, 64, 48), 8.0, (12, 12)
    # training seeds as ReconTransform makes them: (file, slice, epoch, run seed)
    seeds = [seed_from_name("knee3d_000.h5", s % 64, s // 64, 0) for s in range(draws)]
    fresh = PoissonMask2D([accel], calib, bank=0)
    fresh(shape, seed=12345, training=True)  # sigpy's numba kernel: compiled (or loaded) once
    start = time.perf_counter()
    for s in seeds:
        fresh(shape, seed=s, training=True)
    fresh_ms = 1e3 * (time.perf_counter() - start) / draws
    with tempfile.TemporaryDirectory(prefix="mask-bank-bench-") as folder:
        banked = PoissonMask2D([accel], calib, bank=bank, bank_cache=folder)
        settings = banked.bank_settings(shape, accel)
        build_s = {}
        for workers in (1, 2):
            _poisson_mask.cache_clear()  # no mask of a previous build (a forked pool inherits the cache too)
            mask_bank.bank_path(settings, folder).unlink(missing_ok=True)
            mask_bank._LOADED.clear()
            start = time.perf_counter()
            mask_bank.load_bank(settings, folder, progress=False, workers=workers)
            build_s[workers] = time.perf_counter() - start
        file_kib = mask_bank.bank_path(settings, folder).stat().st_size / 1024
        mask_bank._LOADED.clear()  # as a new process (a DataLoader worker) would: only the file
        start = time.perf_counter()
        mask_bank.load_bank(settings, folder, progress=False)
        read_ms = 1e3 * (time.perf_counter() - start)
        start = time.perf_counter()
        for s in seeds:
            banked(shape, seed=s, training=True)
        bank_ms = 1e3 * (time.perf_counter() - start) / draws
    return {"shape": list(shape[1:]), "acceleration": accel, "calib": list(calib), "draws": draws, "bank": bank,
            "fresh_ms_per_slice": fresh_ms, "bank_ms_per_slice": bank_ms, "bank_build_s": build_s[2],
            "bank_build_s_one_process": build_s[1], "bank_file_kib": file_kib, "bank_read_ms": read_ms,
            "epoch_slices": epoch_slices, "fresh_s_per_epoch": fresh_ms * epoch_slices / 1e3,
            "bank_s_per_epoch": bank_ms * epoch_slices / 1e3}


def masks_markdown(result: dict[str, Any]) -> str:
    meta, r = result["meta"], result["mask_bank"]
    return "\n".join([
        "# Poisson-disc training masks: fresh draws vs the mask bank", "",
        f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['usable_cores']} usable cores, "
        f"load average at start {meta['load_average']}", "",
        f"knee3d setting (configs/knee3d.yaml): ky-kz {r['shape'][0]}x{r['shape'][1]}, {r['acceleration']:g}x, "
        f"calib {r['calib'][0]}x{r['calib'][1]}; {r['draws']} training seeds as ReconTransform makes them.", "",
        "| training masks | ms per slice | s per knee3d epoch (224 slices) |", "|---|---|---|",
        f"| drawn afresh (`data.mask.bank: 0`) | {r['fresh_ms_per_slice']:.1f} | {r['fresh_s_per_epoch']:.1f} |",
        f"| mask bank ({r['bank']} masks) | {r['bank_ms_per_slice']:.3f} | {r['bank_s_per_epoch']:.3f} |", "",
        f"One-off: building the bank took {r['bank_build_s']:.1f} s with 2 processes "
        f"({r['bank_build_s_one_process']:.1f} s in one; on a shared 2-core machine the second process finds no "
        f"idle core); it is kept in the cache folder ({r['bank_file_kib']:.0f} KiB), which a new process (a "
        f"DataLoader worker, the next run) reads in {r['bank_read_ms']:.1f} ms.", ""])


def espirit_one_slice(path: Path) -> float:
    import h5py

    from mrirecon.physics.espirit import espirit_maps

    with h5py.File(path) as f:
        k = f["kspace"][0]
    start = time.perf_counter()
    espirit_maps(k, calib_width=20, kernel_width=6)
    return time.perf_counter() - start


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (loader, workers): the median round by slices/s; peaks are the largest of the rounds."""
    rows = []
    for key in dict.fromkeys((r["loader"], r["workers"]) for r in runs):
        group = sorted((r for r in runs if (r["loader"], r["workers"]) == key), key=lambda r: r["slices_per_s"])
        row = dict(group[len(group) // 2])
        row["rounds_slices_per_s"] = [r["slices_per_s"] for r in group]
        for peak in ("peak_process_rss_mib", "peak_process_uss_mib", "peak_worker_rss_mib", "peak_worker_uss_mib"):
            values = [r[peak] for r in group if r[peak] is not None]
            row[peak] = max(values) if values else None
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    rows = {(r["loader"], r["workers"]): r for r in result["loaders"]}
    lines = [
        "# Data pipeline at fastMRI's real size: our lean loader beside fastMRI's", "",
        f"Command: `{meta['command']}` (the timed part under `flock /tmp/mrirecon-bench.lock`)  ",
        f"Date: {meta['date']}  ",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['usable_cores']} usable cores, "
        f"torch {meta['machine']['torch']}; load average at start {meta['load_average']}, at end "
        f"{meta['load_average_end']}. {result['shared']}", "",
        f"Files: 2 x k-space {result['files']['kspace_shape']} complex64 ({result['files']['gib_each']:.2f} GiB "
        "each) with `reconstruction_rss` and an ISMRMRD header, cached maps (1 set, 15 coils, 640 x 368) in the "
        f"maps cache (both entry forms, one folder each); warm page cache. Batch 1, shuffled; per configuration {result['items']} slices timed after "
        f"one warm-up slice, in a fresh process; {result['rounds']} rounds, ours and fastMRI's alternating; the "
        "median round is shown (all rounds in the JSON), peaks are the largest over the rounds.", "",
        "| loader | workers | slices/s | vs fastMRI | main process peak RSS / USS (MiB) "
        "| per worker peak RSS / USS (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def mib(r: dict, who: str) -> str:
        rss, uss = r[f"peak_{who}_rss_mib"], r[f"peak_{who}_uss_mib"]
        return "-" if rss is None else f"{rss:.0f} / {uss:.0f}"

    for (loader, workers), r in rows.items():
        theirs = rows.get(("fastmri", workers))
        ratio = f"{r['slices_per_s'] / theirs['slices_per_s']:.2f}x" if theirs else ""
        lines.append(f"| {loader} | {workers} | {r['slices_per_s']:.2f} | {ratio} | {mib(r, 'process')} "
                     f"| {mib(r, 'worker')} |")
    lines += ["", "Memory: sampled every 20 ms from /proc/PID/smaps_rollup; RSS counts pages a forked worker shares "
              "with its parent (the imports), USS only its own (what a worker allocates per slice). "
              "With 2 workers the main process only collates and receives batches."]
    b = result["batch_transform"]
    lines += ["", "Equal work per slice:", "",
              "- ours (`ReconDataset` + `ReconTransform.load` through `EpochTagged`, training's loader): read the "
              "k-space slice, read its cached coil maps at the recon readout (320 of 640 rows) from the maps cache, "
              "draw the random mask (4x, 8% centre), hand over tensors. No FFT. `ours` reads entries that hold the "
              "maps at every pixel (`data.maps_store: full`, 27 MiB per slice); `ours-coarse` entries that hold "
              "ESPIRiT's coarse eigenvectors (the default, 0.3 MiB per slice), expanded to the 320 rows on read.",
              "- fastMRI (`SliceDataset` + `VarNetDataTransform`, the same mask family): read the k-space slice and "
              "its `reconstruction_rss`, convert to real pairs, draw and apply the mask. No maps (its VarNet "
              "estimates them inside the model), no FFT.",
              "- Not in either loader: ours crops the readout, masks, builds the target and the zero-filled image "
              "and scales in the batch transform (`BatchTransform`) on the training device; fastMRI's VarNet does "
              "its FFTs and sensitivity estimation in the model. Our batch transform on this CPU, one thread: "
              f"{b['median_ms_per_slice']:.0f} ms per slice (median of {b['items']}); on a GPU it runs beside "
              "training.", ""]
    p = result["poisson_mask"]
    if p is not None:
        lines += [f"Poisson-disc ky-kz mask {p['shape'][0]}x{p['shape'][1]} at {p['acceleration']}x: "
                  f"{p['uncached_ms_per_mask']:.1f} ms per draw uncached; {p['cached_ms_per_slice']:.3f} ms per ky-kz "
                  f"slice of a validation file ({p['validation_file_slices']} slices share the file's mask, cached).",
                  ""]
    if result["espirit_seconds_one_slice"] is not None:
        lines.append(f"ESPIRiT (mrirecon.physics.espirit) for one 640 x 368, 15-coil slice: "
                     f"{result['espirit_seconds_one_slice']:.1f} s (paid once per file by the maps cache).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "data_pipeline")
    p.add_argument("--data", type=Path, default=Path("/tmp/mrirecon_fastmri_size"))
    p.add_argument("--items", type=int, default=70, help="slices timed per configuration")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the six configurations (median shown)")
    p.add_argument("--shared", default="", help="a sentence for the report on other work sharing the machine")
    p.add_argument("--worker", nargs=2, metavar=("LOADER", "WORKERS"), help=argparse.SUPPRESS)
    p.add_argument("--batch-transform", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--make-files", action="store_true", help="only write the data files and maps (untimed; run "
                   "it before the timed run, outside the benchmark lock)")
    p.add_argument("--skip-espirit", action="store_true", help="do not time ESPIRiT on one slice")
    p.add_argument("--skip-poisson", action="store_true", help="do not time the Poisson-disc mask")
    p.add_argument("--only", choices=["masks"], help="masks: only the Poisson mask bank measurement")
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(run_loader(a.worker[0], a.data, int(a.worker[1]), a.items)))
        return 0
    if a.batch_transform:
        print(json.dumps(run_batch_transform(a.data, a.items)))
        return 0
    if a.make_files:
        make_files(a.data)
        return 0
    meta = {"command": common.command_line(argv), "date": common.now_utc(), "machine": common.machine_info("cpu"),
            "load_average": common.load_average(), "commit": common.git_commit()}
    if a.only == "masks":
        result = {"meta": meta, "mask_bank": mask_bank_cost()}
        common.write_json(a.out / "mask_bank.json", result)
        common.write_markdown(a.out / "mask_bank.md", masks_markdown(result))
        print(masks_markdown(result))
        return 0
    paths = make_files(a.data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def fresh(*args: str) -> dict[str, Any]:
        cmd = [sys.executable, __file__, *args, "--data", str(a.data), "--items", str(a.items)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    runs = []
    for r in range(a.rounds):
        order = ("ours", "ours-coarse", "fastmri") if r % 2 == 0 else ("fastmri", "ours-coarse", "ours")
        for workers in (0, 2):
            for loader in order:
                runs.append(fresh("--worker", loader, str(workers)))
                print(runs[-1], flush=True)
    result = {"meta": meta, "items": a.items, "rounds": a.rounds, "loaders": median_rows(runs), "runs": runs,
              "batch_transform": fresh("--batch-transform"),
              "files": {"count": len(paths), "kspace_shape": [SLICES, COILS, READOUT, WIDTH],
                        "gib_each": paths[0].stat().st_size / 2**30},
              "poisson_mask": None if a.skip_poisson else poisson_mask_cost(),
              "espirit_seconds_one_slice": None if a.skip_espirit else espirit_one_slice(paths[0]),
              "shared": a.shared}
    result["meta"]["load_average_end"] = common.load_average()
    common.write_json(a.out / "data_pipeline.json", result)
    common.write_markdown(a.out / "data_pipeline.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
