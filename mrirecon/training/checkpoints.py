"""Checkpoint files: written atomically beside their target, read back with a clear error.

A checkpoint is written to a temporary file in the target's own folder, flushed and fsynced, then
renamed over the target (os.replace, atomic within one filesystem) and the folder is fsynced so the
rename itself survives a crash. Lightning's default writer stages the file in the temporary
directory; where that is another filesystem (usual on clusters) the "move" is a copy over the old
file in place, so a kill during it leaves half a checkpoint. Here `path` always holds either the
previous complete checkpoint or the new complete one, whatever TMPDIR is.

Reading goes through `load_checkpoint`, which turns every way a file can fail to be an mrirecon
checkpoint (missing, a folder, empty, truncated, text, a bare tensor, a dict of something else)
into one `CheckpointError` that names the file.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from ..atomic import atomic_path


class CheckpointError(ValueError):
    """A file that cannot be used as an mrirecon checkpoint; the message names the file."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically: temp file in the same folder, fsync, os.replace, fsync folder.

    On any failure (KeyboardInterrupt included) the temporary file is removed and `path` is left
    exactly as it was. The new file gets the permissions the umask gives an ordinary new file.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", require_mrirecon: bool = True) -> dict:
    """Read a checkpoint written by mrirecon (a dict with hyper_parameters.config and state_dict).

    Raises CheckpointError naming the file when it is missing, a folder, empty, truncated or
    otherwise unreadable, not a dict, or (with `require_mrirecon`) a dict without mrirecon's
    config and state_dict. Checkpoints are pickles: load only files you trust.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "checkpoint file not found")
    if p.is_dir():
        raise CheckpointError(p, "is a folder, not a checkpoint file (pass e.g. RUN/checkpoints/last.ckpt)")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "checkpoint file is empty (0 bytes): the write that made it did not finish")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError,
            AttributeError, ImportError, ValueError, OSError) as e:
        first = (str(e).splitlines() or [""])[0].split(". ")[0]
        raise CheckpointError(p, f"not a readable PyTorch checkpoint (truncated, or not written by "
                                 f"torch.save): {type(e).__name__}: {first}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(p, f"holds a {type(ckpt).__name__}, not a checkpoint dict")
    if require_mrirecon:
        if "stage" in ckpt and "modules" in ckpt:  # a pipeline stage's own part (distributed/pipeline.py)
            merged = p.parent.parent / "last.ckpt" if p.parent.name == "stages" else "RUN/checkpoints/last.ckpt"
            raise CheckpointError(p, f"is pipeline stage {ckpt['stage']}'s part of a checkpoint (the weights of GLEAM "
                                     f"modules {[m + 1 for m in ckpt['modules']]} only); use the merged checkpoint "
                                     f"of the whole network: {merged} (or best-epoch<e>.ckpt beside it)")
        hp = ckpt.get("hyper_parameters")
        if not isinstance(hp, dict) or not isinstance(hp.get("config"), dict) or "state_dict" not in ckpt:
            raise CheckpointError(p, "not an mrirecon checkpoint (no hyper_parameters.config / state_dict inside)")
    return ckpt


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (recorded with predictions to name the checkpoint that made them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO writing through `save_checkpoint` and reading through `load_checkpoint`.

    Pass it to the Trainer as `plugins=[AtomicCheckpointIO()]`; ModelCheckpoint, `trainer.save_checkpoint`
    and `fit(ckpt_path=...)` then all use it.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location: Callable | Any = "cpu", weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location=map_location)

    def remove_checkpoint(self, path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "file_sha256", "AtomicCheckpointIO"]
