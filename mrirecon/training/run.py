"""Build the Trainer for a config and run it (what `train.py` calls)."""
from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from ..atomic import write_text
from ..config import Config, ConfigError, save_config
from .checkpoints import AtomicCheckpointIO, file_sha256, load_checkpoint
from .guards import NonFiniteError
from ..data.datamodule import ReconDataModule
from .module import ReconModule


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: str | None
    last_checkpoint: str | None
    train_seconds: float            # wall clock of trainer.fit: steps, data loading, validation, checkpoints
    best_score: float | None
    step_seconds: float | None = None  # the training steps alone (forward, backward, optimizer steps)


class SaveConfig(Callback):
    """Write the fully resolved config into the run directory when fitting starts."""

    def __init__(self, cfg: Config, path: Path):
        self.cfg, self.path = cfg, path

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            save_config(self.cfg, self.path)


class StepTimer(Callback):
    """Sum of the wall-clock time of the training steps (from batch start to batch end: forward,
    backward and optimizer steps, CUDA synchronised), without data loading, validation or checkpoints."""

    def __init__(self):
        self.seconds, self._start = 0.0, None

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is not None:
            self._sync(pl_module)
            self.seconds += time.perf_counter() - self._start
            self._start = None


class FiniteBestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that never records a non-finite score as best: with train.nonfinite=stop the run
    stops with NonFiniteError, with skip the epoch is not considered for best."""

    def __init__(self, *args, nonfinite: str = "stop", **kwargs):
        super().__init__(*args, **kwargs)
        self.nonfinite = nonfinite

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        value = monitor_candidates.get(self.monitor) if self.monitor else None
        if value is not None and not math.isfinite(float(value)):
            error = NonFiniteError(f"validation score {self.monitor}", float(value),
                                   trainer.fit_loop.total_batch_idx, validation=True)
            if self.nonfinite == "stop":
                raise error
            warnings.warn(f"non-finite validation score {self.monitor} = {float(value)} after training step "
                          f"{error.step}: this epoch is not considered for the best checkpoint (train.nonfinite=skip)")
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)


class RecordResume(Callback):
    """On resume: apply the optimizer settings that Lightning would otherwise restore from the checkpoint
    (train.lr, train.weight_decay), and append the resume (checkpoint, hash, changes) to RUN/resumes.json."""

    def __init__(self, cfg: Config, checkpoint: str, changes: dict[str, tuple], path: Path):
        self.cfg, self.checkpoint, self.changes, self.path = cfg, checkpoint, changes, path
        self.sha256 = file_sha256(checkpoint)  # before this run overwrites it (resuming from last.ckpt)

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning restored the optimizers' settings from the checkpoint; put the new ones in.
        apply_optimizer_changes(trainer.optimizers, [c.scheduler for c in trainer.lr_scheduler_configs],
                                self.changes, self.cfg)
        if trainer.is_global_zero:
            record_resume(self.path, self.checkpoint, self.sha256, trainer.current_epoch, self.changes)


def apply_optimizer_changes(optimizers: list, schedulers: list, changes: dict[str, tuple], cfg: Config) -> None:
    """Put changed train.lr / train.weight_decay into optimizers restored from a checkpoint. A scheduled
    rate keeps its place in the schedule: it is scaled by new lr / old lr."""
    if "train.lr" in changes:
        old, new = changes["train.lr"]
        scale = new / old
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = new if math.isclose(group["lr"], old) else group["lr"] * scale
                if "initial_lr" in group:
                    group["initial_lr"] *= scale
        for scheduler in schedulers:
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
    if "train.weight_decay" in changes:
        for opt in optimizers:
            for group in opt.param_groups:
                group["weight_decay"] = cfg.train.weight_decay


def record_resume(path: Path, checkpoint: str, sha256: str, epoch: int, changes: dict[str, tuple]) -> None:
    """Append one resume (checkpoint, its hash, the epoch, every changed key) to RUN/resumes.json."""
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append({"checkpoint": str(Path(checkpoint).resolve()), "sha256": sha256, "epoch": epoch,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "changed": {k: {"checkpoint": a, "now": b} for k, (a, b) in changes.items()}})
    write_text(path, json.dumps(history, indent=2) + "\n")


def resumed_run_dir(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (RUN/checkpoints/x.ckpt with RUN/config.yaml), else None."""
    p = Path(checkpoint).resolve()
    run = p.parent.parent
    return run if p.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def run_loggers(cfg: Config, run_dir: Path | None = None) -> list:
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


# Settings a resumed run cannot change: the architecture and its split, the data layout it was built
# for, and the schedulers whose state the checkpoint holds. Every other change is applied and recorded.
FIXED_ON_RESUME = ("model.", "train.strategy", "train.num_modules", "train.scheduler", "data.kind", "data.volume")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("prox", "mask", "scheduler", "invertible"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_compatible(cfg: Config, ckpt_path: str, ckpt: dict | None = None) -> dict[str, tuple]:
    """Differences {key: (checkpoint value, config value)} between a checkpoint's config and `cfg`
    (`ckpt`: the checkpoint already loaded from `ckpt_path`, else it is read here).

    Raises ValueError naming the keys when one cannot change on resume (FIXED_ON_RESUME); the other
    differences are applied by `train` (optimizer settings included) and recorded in RUN/resumes.json."""
    ckpt = load_checkpoint(ckpt_path) if ckpt is None else ckpt
    saved = _flatten(ckpt["hyper_parameters"]["config"])
    now = _flatten(cfg.to_dict())
    changes = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    fixed = [f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in changes.items()
             if any(k == f or (f.endswith(".") and k.startswith(f)) for f in FIXED_ON_RESUME)]
    if fixed:
        raise ValueError(f"{ckpt_path}: checkpoint was trained with another architecture/strategy/schedule, "
                         "which cannot change on resume (start a new run, or resume with the checkpoint's values): "
                         + "; ".join(fixed))
    return changes


def check_devices(cfg: Config) -> None:
    """A clear ConfigError for a device request this machine cannot meet (Lightning would raise deep inside)."""
    t = cfg.train
    acc = t.accelerator.lower()
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.accelerator: {t.accelerator!r} requested but no CUDA GPU is available "
                              "(torch.cuda.is_available() is False); use train.accelerator=cpu or auto")
        if t.devices > torch.cuda.device_count():
            raise ConfigError(f"train.devices: {t.devices} requested but only {torch.cuda.device_count()} CUDA "
                              "GPU(s) are visible")
    elif acc == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.accelerator: 'mps' requested but MPS is not available; use cpu or auto")
    elif acc not in ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu"):
        raise ConfigError(f"train.accelerator: unknown accelerator {t.accelerator!r} (auto, cpu, gpu, mps)")


def check_output_dir(path: str | Path, key: str = "output_dir") -> None:
    """An output folder that is a file, or cannot be created, gets a ConfigError naming it."""
    p = Path(path)
    existing = next((q for q in (p, *p.parents) if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder")


def _remove_if_empty(run_dir: Path) -> None:
    """A run that failed before it logged a metric or wrote a checkpoint leaves no folder behind."""
    if run_dir.is_dir() and not any(run_dir.rglob("*.ckpt")) and not (run_dir / "metrics.csv").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)


def lightning_max_steps(cfg: Config) -> int:
    """Lightning counts optimizer steps; `train.max_steps` counts batches. A GLEAM batch steps each of its
    M module optimizers once, so it is M of Lightning's steps."""
    t = cfg.train
    return t.max_steps * t.num_modules if t.max_steps > 0 and t.strategy == "gleam" else t.max_steps


def train(cfg: Config, resume: str | None = None, enable_progress_bar: bool = True) -> RunResult:
    check_devices(cfg)
    check_output_dir(cfg.output_dir)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    changes = check_resume_compatible(cfg, resume) if resume else {}
    data = ReconDataModule(cfg)
    data.setup("fit")  # validates every file before the first step
    module = ReconModule(cfg.to_dict())
    continued = resumed_run_dir(resume) if resume else None
    moved = [k for k in ("output_dir", "name") if k in changes]
    if continued is not None and moved:
        warnings.warn(f"resuming in the checkpoint's run folder {continued}; the changed {' and '.join(moved)} "
                      "does not move it")
        changes = {k: v for k, v in changes.items() if k not in moved}
    loggers = run_loggers(cfg, continued)
    run_dir = Path(loggers[0].log_dir).resolve()
    created = not run_dir.exists()
    ckpt = FiniteBestCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/psnr", mode="max",
                                filename="best-epoch{epoch}", auto_insert_metric_name=False,
                                nonfinite=cfg.train.nonfinite)
    # A checkpoint of the latest state after every epoch, for exact resume. (ModelCheckpoint's own
    # save_last only writes when a monitored checkpoint is written, i.e. not after an epoch that
    # did not improve val/psnr.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    t = cfg.train
    timer = StepTimer()
    extra = [RecordResume(cfg, resume, changes, run_dir / "resumes.json")] if resume else []
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, max_steps=lightning_max_steps(cfg), accelerator=t.accelerator, devices=t.devices,
        precision=t.precision, logger=loggers, callbacks=[ckpt, last, SaveConfig(cfg, run_dir / "config.yaml"), timer, *extra],
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch, enable_progress_bar=enable_progress_bar,
        deterministic="warn", enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # EpochSampler shards the epoch itself under DDP (datamodule.py)
        default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
    )
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    except BaseException:
        if created:
            _remove_if_empty(run_dir)
        raise
    seconds = time.perf_counter() - start
    best = ckpt.best_model_path or None
    score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    return RunResult(run_dir, best, last.best_model_path or None, seconds, score, timer.seconds)
