"""What every benchmark records and how it writes: machine and run information, atomic JSON/markdown/PNG.

A benchmark's numbers mean little without the machine, software, command and time they came from, so
each result carries a `meta` block built here. Files are written atomically (`mrirecon.atomic`): a
reader never sees a half-written result, and an interrupted run leaves the previous one intact.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: make `mrirecon` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mrirecon.atomic import atomic_path, write_text  # noqa: E402


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy a shared machine was while timings were taken."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """CPU model and cores, torch threads, platform, Python, torch and CUDA versions, the GPU's name."""
    device = torch.device(device)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": usable,
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def git_commit() -> str | None:
    """The checkout's HEAD commit (uncommitted changes are not reflected), or None outside git."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def command_line(argv: Sequence[str] | None = None, script: str | os.PathLike | None = None) -> str:
    """The command that reproduces a run, relative to the repository root."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script = display_path(Path(script if script is not None else sys.argv[0]))
    return shlex.join(["python", script, *argv])


def display_path(path: str | os.PathLike) -> str:
    """Relative to the repository when inside it, so results do not carry one machine's folders."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def release_memory(device: torch.device) -> None:
    """Free what dropped references still hold (reference cycles; CUDA's cached blocks), so the next
    configuration's memory is measured without the previous one's."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_markdown(path: str | os.PathLike, text: str) -> Path:
    return write_text(path, text if text.endswith("\n") else text + "\n")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (PNG; the format is given explicitly, the temp name has no suffix)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def keep_figures(figures: Sequence[str | os.PathLike], dest: str | os.PathLike, prefix: str) -> list[str]:
    """Copy an evaluation's figures, with the files beside each that share its stem (x-t profiles, GIFs),
    into the report's folder as PREFIX_NAME: the report keeps its figures while the run and evaluation folders
    stay out of the repository. Returns the copies' repository-relative paths."""
    kept = []
    for fig in map(Path, figures):
        for src in sorted(fig.parent.glob(fig.stem + "*")):
            target = Path(dest) / f"{prefix}_{src.name}"
            with atomic_path(target, copy_from=src):
                pass
            if src == fig:
                kept.append(display_path(target))
    return kept
