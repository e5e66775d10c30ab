"""Benchmark: ESPIRiT coil maps at fastMRI size, ours (mrirecon.physics.espirit) against sigpy's EspiritCalib.

    flock /tmp/mrirecon-bench.lock python benchmarks/coil_maps.py --json results/coil_maps/coil_maps.json \\
        [--slices 4] [--sigpy-slices 1] [--device cuda]

Data: synthetic fastMRI knee slices (`mrirecon.synthetic.make_volume("knee2d", size=(320, 368), coils=15)`:
k-space 640 x 368, 15 coils, a loop-coil array with its bias field, noise). Cases:
  - square: a 24 x 24 calibration region, kernel 6 (sigpy's EspiritCalib handles only square regions);
  - brain-like rectangle: the 24 central columns by the full 640-point readout, kernel 6 (fastMRI files
    whose mask acquired a few centre lines; brain's 4%).
Timed (seconds per slice, median over slices, after one untimed warm-up call): ours with its default coarse
grid and with every pixel exact (coarse_grid=0), one slice per call and `--slices` slices in one batched
call; a `--slices`-slice fastMRI-size file through the maps cache (read, ESPIRiT, HDF5 write; both entry forms,
and reading one slice's maps back at the recon readout); sigpy's
EspiritCalib (30 power iterations, its default) on `--sigpy-slices` slices; ours on `--device cuda` when a
GPU is there (synchronised; otherwise the column says "no GPU"). All CPU timings on one thread
(torch.set_num_threads(1), OMP_NUM_THREADS=1). Agreement on slice 0, inside both maps' supports and up to a
phase per pixel: 1 - |<ours, reference>| (0 when the unit coil vectors agree), max and 99th percentile, and
the fraction of pixels where the two supports (maps nonzero) agree.

Outputs: the JSON (`meta` and `rows`) and a markdown table with the same stem, written atomically.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch start their thread pools

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from mrirecon.physics.espirit import espirit  # noqa: E402
from mrirecon.synthetic.generator import make_volume  # noqa: E402

SCHEMA_VERSION = 2  # 2: cache_build per entry form (coarse, full)
KNEE_TRAINING_SLICES = 35_000  # fastMRI knee multi-coil training set, about (ANCHORS.md section 8)
CASES = {"square 24x24": (24, 24), "rectangle 640x24 (brain-like)": (640, 24)}
KERNEL = 6
RECON_ROWS = slice(160, 480)  # the 320 central rows of the 640-point readout: what the fastMRI reader reads


def slices(n: int, seed: int) -> np.ndarray:
    """(n, 15, 640, 368) complex64 synthetic knee k-space."""
    data, _ = make_volume("knee2d", 0, seed=seed, coils=15, slices=n, size=(320, 368))
    return np.ascontiguousarray(data["kspace"], dtype=np.complex64)


CPU_SECONDS: list[float] = []  # process CPU time of each timed call, beside its wall time


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of fn() (CUDA synchronised); its process CPU seconds go to CPU_SECONDS: on a shared
    machine a one-thread run's CPU time is the work, its wall time also holds the waits for a core."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    CPU_SECONDS.append(time.process_time() - cpu)
    return time.perf_counter() - start, out


def per_slice(kspace: np.ndarray, calib, device: torch.device, coarse_grid: int | None, batched: bool,
              count: int) -> tuple[float, float, np.ndarray]:
    """Median wall and CPU seconds per slice of ours over `count` slices (or one batched call), slice 0's maps."""
    x = torch.from_numpy(kspace[:count]).to(device)
    run = lambda k: espirit(k, calib, KERNEL, coarse_grid=coarse_grid).maps  # noqa: E731
    timed(lambda: run(x[:1]), device)  # warm-up: first-call allocations, CUDA kernels
    if batched:
        seconds, maps = timed(lambda: run(x), device)
        return seconds / count, CPU_SECONDS[-1] / count, maps[0].cpu().numpy()
    times, cpu, first = [], [], None
    for s in range(count):
        seconds, maps = timed(lambda: run(x[s]), device)
        times.append(seconds)
        cpu.append(CPU_SECONDS[-1])
        first = maps.cpu().numpy() if first is None else first
    return statistics.median(times), statistics.median(cpu), first


def sigpy_per_slice(kspace: np.ndarray, count: int) -> tuple[float, float, np.ndarray]:
    import sigpy.mri as mr

    times, cpu, first = [], [], None
    for s in range(count):
        seconds, maps = timed(lambda: mr.app.EspiritCalib(kspace[s], calib_width=24, kernel_width=KERNEL,
                                                            show_pbar=False).run(), torch.device("cpu"))
        times.append(seconds)
        cpu.append(CPU_SECONDS[-1])
        first = np.asarray(maps)[None] if first is None else first
    return statistics.median(times), statistics.median(cpu), first


def cache_build(count: int, seed: int) -> dict[str, Any]:
    """One fastMRI-size file of `count` slices through the maps cache on one CPU thread, in each entry form
    (`mrirecon.data.maps_entry`: "coarse", the default, and "full"): build (read its calibration regions,
    ESPIRiT, write HDF5), seconds per slice, the entry's size per slice, and reading one slice's maps at the
    recon readout (320 of 640 rows, as training's loader does; the coarse form is expanded on read)."""
    import tempfile

    from mrirecon.data.coil_maps import EspiritSettings, MapCache
    from mrirecon.data.maps_entry import read_entry
    from mrirecon.synthetic.generator import generate

    cpu = torch.device("cpu")
    out: dict[str, Any] = {"slices": count}
    with tempfile.TemporaryDirectory(prefix="mrirecon-coil-maps-bench-") as tmp:
        path = generate("knee2d", Path(tmp) / "data", volumes=1, seed=seed, coils=15, slices=count,
                        size=(320, 368))["train"][0]
        maps = {}
        for store in ("coarse", "full"):
            cache = MapCache(Path(tmp) / f"cache-{store}", EspiritSettings(calib_width=24), device="cpu", store=store)
            seconds, entry = timed(lambda: cache.build(path, "knee2d"), cpu)
            build_cpu = CPU_SECONDS[-1]
            lookup_s, _ = timed(lambda: cache.lookup(path, "knee2d"), cpu)
            reads = [timed(lambda: read_entry(entry, s, RECON_ROWS), cpu) for s in range(count)]
            maps[store] = np.stack([m for _, m in reads])
            out[store] = {"build_s_per_slice": seconds / count, "build_cpu_s_per_slice": build_cpu / count,
                          "lookup_s": lookup_s, "entry_mib_per_slice": entry.stat().st_size / count / 2 ** 20,
                          "read_s_per_slice": statistics.median(t for t, _ in reads)}
        out["max_abs_difference"] = float(np.abs(maps["coarse"] - maps["full"]).max())
    return out


def agreement(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Inside both supports, up to a phase per pixel: max and p99 of 1 - |<ours, ref>|; support agreement."""
    a, b = ours[0], ref[0]
    sa, sb = np.abs(a).sum(0) > 0, np.abs(b).sum(0) > 0
    gap = 1 - np.abs((a.conj() * b).sum(0))[sa & sb]
    return {"gap_max": float(gap.max()), "gap_p99": float(np.quantile(gap, 0.99)),
            "support_agreement": float((sa == sb).mean()), "support_pixels": int((sa & sb).sum())}


def run(a: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    gpu = torch.device(a.device) if a.device == "cuda" and torch.cuda.is_available() else None
    kspace = slices(max(a.slices, a.sigpy_slices), a.seed)
    load_before = common.load_average()
    rows = []
    for case, calib in CASES.items():
        fast_s, fast_cpu, fast = per_slice(kspace, calib, cpu, None, False, a.slices)
        batch_s, batch_cpu, _ = per_slice(kspace, calib, cpu, None, True, a.slices)
        exact_s, exact_cpu, exact = per_slice(kspace, calib, cpu, 0, False, 1)
        row = {"case": case, "calib": list(calib), "kernel": KERNEL,
               "ours_cpu_s": fast_s, "ours_cpu_batched_s": batch_s, "ours_cpu_exact_s": exact_s,
               "ours_cpu_cpu_s": fast_cpu, "ours_cpu_batched_cpu_s": batch_cpu, "ours_cpu_exact_cpu_s": exact_cpu,
               "ours_vs_exact": agreement(fast, exact)}
        if calib[0] == calib[1] and a.sigpy_slices > 0:
            sigpy_s, sigpy_cpu, ref = sigpy_per_slice(kspace, a.sigpy_slices)
            row.update(sigpy_cpu_s=sigpy_s, sigpy_cpu_cpu_s=sigpy_cpu, sigpy_slices=a.sigpy_slices,
                       ours_vs_sigpy=agreement(fast, ref), exact_vs_sigpy=agreement(exact, ref),
                       speedup_vs_sigpy=sigpy_s / fast_s, speedup_vs_sigpy_cpu_time=sigpy_cpu / fast_cpu)
        else:
            row.update(sigpy_cpu_s=None, sigpy_cpu_cpu_s=None,
                       sigpy_note="sigpy's EspiritCalib takes square regions only")
        if gpu is not None:
            row["ours_cuda_s"], _, gmaps = per_slice(kspace, calib, gpu, None, True, a.slices)
            row["ours_cuda_one_slice_s"], _, _ = per_slice(kspace, calib, gpu, None, False, a.slices)
            row["cuda_vs_cpu"] = agreement(gmaps, fast)
        else:
            row["ours_cuda_s"] = None
        rows.append(row)
        print(row, flush=True)
    cache = cache_build(a.slices, a.seed)
    square = rows[0]
    # Core-hours are CPU time (the work; the wall time of a shared machine also holds waits for a core),
    # through the cache (read, ESPIRiT, write) for ours; independent files, so N processes divide it by N.
    core_hours = cache["coarse"]["build_cpu_s_per_slice"] * KNEE_TRAINING_SLICES / 3600
    estimate = {"slices": KNEE_TRAINING_SLICES, "ours_core_hours": core_hours,
                "ours_espirit_only_core_hours": square["ours_cpu_cpu_s"] * KNEE_TRAINING_SLICES / 3600,
                "ours_hours_on_cores": {n: core_hours / n for n in (8, 16, 32, 64)},
                "cache_gib": {store: cache[store]["entry_mib_per_slice"] * KNEE_TRAINING_SLICES / 1024
                              for store in ("coarse", "full")}}
    if square.get("sigpy_cpu_cpu_s"):
        estimate["sigpy_core_hours"] = square["sigpy_cpu_cpu_s"] * KNEE_TRAINING_SLICES / 3600
    if square.get("ours_cuda_s"):
        estimate["ours_gpu_hours_espirit_only"] = square["ours_cuda_s"] * KNEE_TRAINING_SLICES / 3600
    return {"meta": {"schema_version": SCHEMA_VERSION, "date": common.now_utc(), "command": common.command_line(),
                     "machine": common.machine_info(gpu or cpu), "load_before": load_before,
                     "load_after": common.load_average(), "git_commit": common.git_commit(),
                     "slices": a.slices, "sigpy_slices": a.sigpy_slices, "seed": a.seed,
                     "data": "synthetic knee2d, k-space 640 x 368, 15 coils (mrirecon.synthetic.make_volume)"},
            "rows": rows, "cache_build": cache, "knee_training_set": estimate}


def _s(v: float | None, missing: str) -> str:
    return missing if v is None else f"{v:.3f}"


def markdown(result: dict[str, Any]) -> str:
    meta, rows, est = result["meta"], result["rows"], result["knee_training_set"]
    gpu_missing = "no GPU"
    lines = [
        "# ESPIRiT coil maps at fastMRI size (640 x 368, 15 coils, kernel 6)", "",
        f"`{meta['command']}` on {meta['date']}; {meta['machine']['cpu']}, one thread; load average before "
        f"{meta['load_before']}, after {meta['load_after']}.", "",
        "Seconds per slice (median): wall time, and in brackets the process CPU time (the work, on a shared "
        "machine). Agreement on slice 0 inside both supports, up to a phase per pixel: max of 1 - |<a, b>| (p99 in "
        "brackets), and the share of pixels where the supports agree.", "",
        "| case | ours CPU | ours CPU, one batch of slices | ours CPU, every pixel exact | sigpy CPU | ours CUDA | "
        "ours vs sigpy | ours vs exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs_sigpy = (f"{r['ours_vs_sigpy']['gap_max']:.1e} ({r['ours_vs_sigpy']['gap_p99']:.1e}), "
                    f"{100 * r['ours_vs_sigpy']['support_agreement']:.2f}%") if "ours_vs_sigpy" in r else \
            ("not run" if r["calib"][0] == r["calib"][1] else "square regions only")
        vs_exact = (f"{r['ours_vs_exact']['gap_max']:.1e} ({r['ours_vs_exact']['gap_p99']:.1e}), "
                    f"{100 * r['ours_vs_exact']['support_agreement']:.2f}%")
        sigpy = "n/a" if r["sigpy_cpu_s"] is None else f"{r['sigpy_cpu_s']:.1f} ({r['sigpy_cpu_cpu_s']:.1f})"
        lines.append(f"| {r['case']} | {_pair(r, 'ours_cpu')} | {_pair(r, 'ours_cpu_batched')} | "
                     f"{_pair(r, 'ours_cpu_exact')} | {sigpy} | {_s(r['ours_cuda_s'], gpu_missing)} | "
                     f"{vs_sigpy} | {vs_exact} |")
    c = result["cache_build"]
    lines += ["", f"Through the maps cache (one {c['slices']}-slice file, one thread), in each entry form: build (read "
              "the calibration regions, ESPIRiT, write HDF5), the entry's size, finding it again (content key), and "
              "reading one slice's maps at the recon readout (320 of 640 rows, what training's loader reads; the "
              "coarse form is expanded on read):", "",
              "| entry form | build s per slice (CPU) | MiB per slice | lookup ms | read ms per slice |",
              "|---|---|---|---|---|"]
    for store in ("coarse", "full"):
        e = c[store]
        lines.append(f"| {store}{' (default)' if store == 'coarse' else ''} | {e['build_s_per_slice']:.3f} "
                     f"({e['build_cpu_s_per_slice']:.3f}) | {e['entry_mib_per_slice']:.2f} | {1000 * e['lookup_s']:.0f} | "
                     f"{1000 * e['read_s_per_slice']:.1f} |")
    lines += ["", f"Both forms read back the same maps (largest difference {c['max_abs_difference']:.1e})."]
    hours = ", ".join(f"{h:.2f} h on {n} cores" for n, h in est["ours_hours_on_cores"].items())
    lines += ["", f"fastMRI knee training set ({est['slices']:,} slices), square case, from the CPU times above: "
              f"maps cache {est['cache_gib']['coarse']:.0f} GiB coarse (the default) or "
              f"{est['cache_gib']['full'] / 1024:.2f} TiB full; "
              f"ours through the cache {est['ours_core_hours']:.1f} core-hours ({hours}; ESPIRiT alone "
              f"{est['ours_espirit_only_core_hours']:.1f})"
              + (f", sigpy {est['sigpy_core_hours']:.0f} core-hours" if "sigpy_core_hours" in est else "")
              + (f"; ours on one GPU {est['ours_gpu_hours_espirit_only']:.2f} h (ESPIRiT alone)"
                 if "ours_gpu_hours_espirit_only" in est else "; one GPU: not measured (no GPU in this run)") + "."]
    return "\n".join(lines)


def _pair(row: dict[str, Any], name: str) -> str:
    return f"{row[name + '_s']:.3f} ({row[name + '_cpu_s']:.3f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=Path("results/coil_maps/coil_maps.json"))
    p.add_argument("--slices", type=int, default=4, help="slices timed for ours")
    p.add_argument("--sigpy-slices", type=int, default=1, help="slices timed for sigpy (~28 s each); 0 skips it")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: also time ours on the GPU")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    result = run(a)
    common.write_json(a.json, result)
    common.write_markdown(a.json.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
