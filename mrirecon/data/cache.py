"""Cache folders for results the framework computes once and reuses across runs: ESPIRiT coil maps
(`coil_maps`) and Poisson-disc mask banks (`masks/poisson.py`).

Each cache lives in a folder chosen by a setting, else an environment variable, else
`~/.cache/mrirecon/<name>`. An entry's file name carries a hash of everything that defines its content
(`content_key`), so other settings get another file, never a stale one; entries are written atomically
(`mrirecon.atomic.atomic_path`), so a reader never sees half a file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def cache_folder(folder: str | os.PathLike | None, env: str, name: str) -> Path:
    """`folder` if given, else $`env` if set, else ~/.cache/mrirecon/`name`."""
    return Path(folder or os.environ.get(env) or f"~/.cache/mrirecon/{name}").expanduser()


def content_key(identity: dict[str, Any]) -> str:
    """SHA-256 (hex) of a JSON-able description of an entry's content, independent of key order."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def build_lock(path: str | os.PathLike) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock (flock on the hidden file `.NAME.lock` beside `path`) while
    building the entry `path`: processes that need the same entry at once (DataLoader workers) build it
    once; the others wait and then read it. OSError if the folder cannot be written."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
