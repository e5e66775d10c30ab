"""The run folder: where it is, who may write it, what it records. Shared by every trainer (Lightning's
and the pipeline's), so a run folder means the same whichever wrote it.

    OUTPUT_DIR/NAME/version_N/   config.yaml, metrics.csv, resumes.json, checkpoints/{last,best-epoch<e>}.ckpt

A run folder is locked while a process trains into it (a second writer is refused, naming the holder);
a resumed run goes on in its checkpoint's folder; checkpoint paths recorded inside checkpoints are
relative to the checkpoints folder, so a copied or moved run folder keeps its best record.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger

from ..atomic import write_text
from ..config import Config, ConfigError


def check_output_dir(path: str | Path, key: str = "output_dir") -> None:
    """An output folder that is a file, or cannot be created, gets a ConfigError naming it."""
    p = Path(path)
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder")


def check_run_name(cfg: Config) -> None:
    """`name` is a folder inside `output_dir`: no absolute path, no '..', not empty."""
    name = str(cfg.name)
    parts = Path(name).parts
    if not name.strip() or Path(name).is_absolute() or ".." in parts or name.strip() in (".",):
        raise ConfigError(f"name: {cfg.name!r} would put the run folder outside output_dir={cfg.output_dir!r} "
                          "(a name is a folder inside output_dir: no '..', no absolute path, not empty)")


def resumed_run_dir(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (RUN/checkpoints/x.ckpt with RUN/config.yaml), else None."""
    p = Path(checkpoint).resolve()
    run = p.parent.parent
    return run if p.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def run_loggers(cfg: Config, run_dir: Path | None = None) -> list:
    """CSV (and, when installed, TensorBoard) loggers of a new run, or of `run_dir` when a run goes on."""
    # A resumed run logs into its own folder again (same version), so its best-checkpoint record,
    # metrics.csv and checkpoints stay together.
    save_dir, name, version = ((run_dir.parent.parent, run_dir.parent.name, run_dir.name) if run_dir
                               else (cfg.output_dir, cfg.name, None))
    csv = CSVLogger(save_dir=save_dir, name=name, version=version)
    metrics = run_dir / "metrics.csv" if run_dir else None
    if metrics is not None and metrics.is_file():
        # Lightning's CSV writer deletes an existing metrics.csv when it starts; a resumed run appends to it.
        old = metrics.read_text()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            writer = csv.experiment
        write_text(metrics, old)
        writer.metrics_keys = old.splitlines()[0].split(",") if old.strip() else []
    loggers = [csv]
    try:
        import tensorboard  # noqa: F401
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=save_dir, name=name, version=csv.version))
    except ImportError:
        pass  # TensorBoard is optional: CSV logs are always written
    return loggers


def record_resume(path: Path, checkpoint: str, sha256: str, epoch: int, changes: dict[str, tuple]) -> None:
    """Append one resume (checkpoint, its hash, the epoch, every changed key) to RUN/resumes.json."""
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append({"checkpoint": str(Path(checkpoint).resolve()), "sha256": sha256, "epoch": epoch,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "changed": {k: {"checkpoint": a, "now": b} for k, (a, b) in changes.items()}})
    write_text(path, json.dumps(history, indent=2) + "\n")


def remove_if_empty(run_dir: Path) -> None:
    """A run that failed before it logged a metric or wrote a checkpoint leaves no folder behind."""
    if run_dir.is_dir() and not any(run_dir.rglob("*.ckpt")) and not (run_dir / "metrics.csv").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)


def relative_checkpoint(path: str | os.PathLike | None, folder: str | os.PathLike) -> str | None:
    """A checkpoint path as recorded inside a checkpoint: relative to the checkpoints folder when inside it."""
    if not path:
        return path
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path(folder).resolve()))
    except ValueError:
        return str(p)


def checkpoint_in(recorded: str | None, folder: str | os.PathLike, old_folder: str | None = None) -> str | None:
    """A recorded checkpoint path back in this run's checkpoints folder: relative names are resolved there,
    and an absolute path inside the folder the checkpoint was written in (`old_folder`, older checkpoints)
    is moved into this one, so a copied run folder points at its own files."""
    if not recorded:
        return recorded
    p = Path(recorded)
    if not p.is_absolute():
        return str(Path(folder) / p)
    if old_folder:
        try:
            return str(Path(folder) / p.relative_to(old_folder))
        except ValueError:
            pass
    return str(p)


__all__ = ["check_output_dir", "check_run_name", "resumed_run_dir", "run_loggers", "record_resume",
           "remove_if_empty", "relative_checkpoint", "checkpoint_in"]
