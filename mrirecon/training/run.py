"""Build the Trainer for a config and run it (what `train.py` calls)."""
from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loops.fit_loop import _FitLoop
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.loops.loop import _Loop

from ..atomic import folder_lock
from ..config import Config, ConfigError, save_config
from ..data.datamodule import ReconDataModule
from ..numerics import flush_denormals
from .checkpoints import AtomicCheckpointIO, file_sha256, load_checkpoint
from .data_parallel import install_child_watch
from .guards import NonFiniteError
from .interrupts import StopRequests, TrainingInterrupted
from .module import ReconModule
from .strategies import get_strategy
from .run_folder import (check_output_dir, check_run_name, checkpoint_in, record_resume, relative_checkpoint,
                         remove_if_empty, resumed_run_dir, run_loggers)


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: str | None
    last_checkpoint: str | None
    train_seconds: float            # wall clock of trainer.fit: steps, data loading, validation, checkpoints
    best_score: float | None
    step_seconds: float | None = None  # the training steps alone (forward, backward, optimizer steps)
    last_score: float | None = None    # val/psnr of the last validation
    warning: str | None = None         # `degradation`'s message when the last validation fell far below the best


# How far the last validation PSNR may fall below the best before the run says so: epoch-to-epoch changes of
# a healthy run stay well under 1 dB; a run that diverged on huge but finite losses (no non-finite guard
# fires) fell tens of dB (the brain demo without gradient clipping: to -119 dB).
DEGRADED_DB = 3.0


def degradation(best: float | None, last: float | None, threshold: float = DEGRADED_DB) -> str | None:
    """A warning when the last validation PSNR is more than `threshold` dB below the best (or not finite),
    else None."""
    if best is None or last is None or (math.isfinite(last) and best - last <= threshold):
        return None
    return (f"the last validation PSNR ({last:.2f} dB) is {best - last:.1f} dB below the best ({best:.2f} dB): "
            "training degraded after its best epoch (diverged?); the best checkpoint holds the best weights. "
            "Consider train.grad_clip_norm (e.g. 1) or a lower train.lr")


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


class ResumeAtEpochEnd(_FitLoop):
    """Lightning 2.6's fit loop, except that a run with max_steps resumed from a checkpoint written at an epoch's
    end starts the next epoch, as a run without max_steps does. Lightning marks the loop as restarting whenever
    max_steps is set; from an epoch-end checkpoint it then replays the end of the finished epoch and counts
    it twice, so the resumed run trained one epoch too few (nothing when max_epochs went 1 -> 2) and ended as
    if complete. A checkpoint written inside an epoch (a stop, max_steps) still restarts that epoch."""

    @_Loop.restarting.setter
    def restarting(self, restarting: bool) -> None:
        epoch = self.epoch_progress.current
        unfinished = any(v != epoch.processed for v in (epoch.ready, epoch.started))
        _Loop.restarting.fset(self, restarting and unfinished)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose record (best, last, top-k paths) is stored relative to its folder, so a copied
    or moved run folder resumes with its own best record (Lightning stores absolute paths and drops the
    record when the folder changed)."""

    _PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def __init__(self, *args, stop: "StopOnSignal | None" = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop  # last.ckpt: `stop` wrote it where max_steps ended an epoch early

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.stop is None or not self.stop.saved_inside_epoch:
            super().on_train_epoch_end(trainer, pl_module)

    def state_dict(self) -> dict:
        state = super().state_dict()
        folder = self.dirpath
        state.update({k: relative_checkpoint(state.get(k), folder) for k in self._PATHS})
        state["best_k_models"] = {relative_checkpoint(k, folder): v for k, v in state["best_k_models"].items()}
        state["dirpath_written"], state["dirpath"] = state["dirpath"], "."
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        old = state.get("dirpath_written") or (state.get("dirpath") if state.get("dirpath") != "." else None)
        state.update({k: checkpoint_in(state.get(k), self.dirpath, old) for k in self._PATHS})
        state["best_k_models"] = {checkpoint_in(k, self.dirpath, old): v
                                  for k, v in state.get("best_k_models", {}).items()}
        state["dirpath"] = self.dirpath
        super().load_state_dict(state)


class FiniteBestCheckpoint(RunCheckpoint):
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


class StopOnSignal(Callback):
    """Ctrl-C / SIGTERM (see interrupts.py): after the current training step, write last.ckpt of that step
    and stop with TrainingInterrupted. Data-parallel processes agree on the step to stop after. The
    position in the epoch is kept in every checkpoint, so a run resumed from a stop, or from the end of
    `max_steps` inside an epoch, goes on with the next batch."""

    def __init__(self, requests: StopRequests, last_path: Path, data: ReconDataModule):
        self.requests, self.last_path, self.data = requests, last_path, data
        self.position = (0, 0)  # (epoch, batches of it trained) in a checkpoint written inside an epoch
        self.saved_inside_epoch = False  # last.ckpt written where max_steps ended an epoch early

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning's own SIGTERM handler (installed at fit start) would end the run with SystemExit after the
        # step, without a checkpoint of it: SIGTERM goes to our request like Ctrl-C (Lightning restores the
        # handlers it found when it tears down).
        self.requests.take(signal.SIGTERM)

    def _stop_requested(self, trainer) -> bool:
        stop = self.requests.requested
        return trainer.strategy.reduce_boolean_decision(stop, all=False) if trainer.world_size > 1 else stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.position = (trainer.current_epoch, batch_idx + 1)
        if self._stop_requested(trainer):
            self._stop(trainer, trainer.fit_loop.total_batch_idx + 1)
        elif 0 < trainer.max_steps <= trainer.global_step and batch_idx + 1 < trainer.num_training_batches:
            # max_steps ends training inside this epoch: last.ckpt of this step, as a stop writes it (Lightning's
            # epoch-end checkpoint would mark the epoch done, and a resumed run would skip its other batches).
            trainer.save_checkpoint(self.last_path)
            self.saved_inside_epoch = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.position[1] >= trainer.num_training_batches:  # a whole epoch; else max_steps ended it inside
            self.position = (0, 0)
        if self._stop_requested(trainer):  # asked during validation: last.ckpt of the epoch is being written
            trainer.save_checkpoint(self.last_path)
            self._stop(trainer, trainer.fit_loop.total_batch_idx + 1, saved=True)

    def _stop(self, trainer, step: int, saved: bool = False) -> None:
        if not saved:
            trainer.save_checkpoint(self.last_path)
        raise TrainingInterrupted(self.requests.signum or 15, str(self.last_path), step)

    @property
    def state_key(self) -> str:
        return "StopOnSignal"  # one key for every trainer's stop (the pipeline's too): checkpoints are interchangeable

    def state_dict(self) -> dict:
        return {"epoch": self.position[0], "batches": self.position[1]}

    def load_state_dict(self, state: dict) -> None:
        self.data.resume_at = (state.get("epoch", 0), state.get("batches", 0))


# Settings a resumed run cannot change: the architecture and its split, the data layout it was built
# for, and the schedulers whose state the checkpoint holds. Every other change is applied and recorded.
# A strategy adds its own (register_strategy(..., fixed_on_resume=...)).
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
    keys = FIXED_ON_RESUME + get_strategy(cfg.train.strategy).fixed_on_resume  # the strategy's own too
    fixed = [f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in changes.items()
             if any(k == f or (f.endswith(".") and k.startswith(f)) for f in keys)]
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


def lightning_limit(value: float) -> int | float:
    """`limit_*_batches` as Lightning's Trainer reads it: a float is a fraction, an int a count (the config holds a
    float either way: 2.0 means two batches)."""
    return int(value) if value > 1 else value


def lightning_max_steps(cfg: Config, module: ReconModule) -> int:
    """Lightning counts optimizer steps; `train.max_steps` counts batches. A batch steps every optimizer of the
    module once (GLEAM: one per module; a pipeline stage: one per module it owns), so it is that many steps."""
    t = cfg.train
    return t.max_steps * len(module.param_groups()) if t.max_steps > 0 else t.max_steps


@dataclass
class RunTrainer:
    """A run's Trainer and the callbacks whose state the caller reads back (best/last checkpoints, step time)."""

    trainer: pl.Trainer
    best: FiniteBestCheckpoint
    last: RunCheckpoint
    timer: StepTimer


def build_trainer(cfg: Config, module: ReconModule, data: ReconDataModule, run_dir: Path, loggers: list | bool,
                  requests: StopRequests, *, resume: str | None = None, changes: dict[str, tuple] | None = None,
                  stop: StopOnSignal | None = None, strategy: Any = "auto", accelerator: str | None = None,
                  devices: Any = None, enable_progress_bar: bool = True) -> RunTrainer:
    """The Trainer of a run: limits, validation schedule, scheduler stepping (the module's), best and last
    checkpoints, logging, resume record and the Ctrl-C / SIGTERM stop. Single-process training and every
    pipeline stage (distributed/pipeline.py: its own `strategy` and `stop`) run on this one Trainer."""
    t = cfg.train
    ckpt_dir = run_dir / "checkpoints"
    best = FiniteBestCheckpoint(dirpath=ckpt_dir, monitor="val/psnr", mode="max",
                                filename="best-epoch{epoch}", auto_insert_metric_name=False,
                                nonfinite=t.nonfinite)
    stop = stop if stop is not None else StopOnSignal(requests, ckpt_dir / "last.ckpt", data)
    # A checkpoint of the latest state after every epoch (validated or not), for exact resume; the last
    # epoch of a run always has one, whatever check_val_every_n_epoch is. (ModelCheckpoint's own save_last
    # only writes when a monitored checkpoint is written.)
    last = RunCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                         enable_version_counter=False, save_on_train_epoch_end=True, stop=stop)
    timer = StepTimer()
    data_parallel = strategy == "auto" and (t.devices > 1 or t.num_nodes > 1)
    if data_parallel:  # Lightning's DDP, with our timeout: its default (30 minutes) hides a stopped process
        strategy = DDPStrategy(timeout=timedelta(seconds=t.ddp_timeout_s))
    install_child_watch()  # a dead DDP process is reported in one line (exit 4), not SIGKILLed away
    flush_denormals()  # trained weights drift into subnormals: 15x slower steps on the CPU (numerics.py)
    extra = [RecordResume(cfg, resume, changes or {}, run_dir / "resumes.json")] if resume else []
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, max_steps=lightning_max_steps(cfg, module),
        accelerator=accelerator or t.accelerator, devices=devices if devices is not None else t.devices,
        num_nodes=t.num_nodes if data_parallel else 1,  # a pipeline stage is one process to Lightning
        strategy=strategy, precision=t.precision, logger=loggers,
        callbacks=[best, last, SaveConfig(cfg, run_dir / "config.yaml"), timer, stop, *extra],
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=lightning_limit(t.limit_train_batches),
        limit_val_batches=lightning_limit(t.limit_val_batches),
        check_val_every_n_epoch=t.check_val_every_n_epoch, enable_progress_bar=enable_progress_bar,
        deterministic="warn", enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # EpochSampler shards the epoch itself under DDP (datamodule.py)
        default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
    )
    if type(trainer.fit_loop) is not _FitLoop:  # a Lightning that changed its loops: check ResumeAtEpochEnd
        raise RuntimeError(f"unexpected Lightning fit loop {type(trainer.fit_loop).__name__}")
    trainer.fit_loop.__class__ = ResumeAtEpochEnd  # same state, one property changed
    return RunTrainer(trainer, best, last, timer)


def fit(run: RunTrainer, module: ReconModule, data: ReconDataModule, requests: StopRequests,
        resume: str | None = None) -> RunResult:
    """trainer.fit (from `resume` when given); a second Ctrl-C / SIGTERM, which stops at once, becomes
    TrainingInterrupted. Returns what the run left: its folder, best and last checkpoints, times."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Lightning advises sync_dist for epoch metrics once torch.distributed runs (DDP, pipeline stages):
            # every process validates the whole val split (or receives the gathered result), so all log the
            # same values and there is nothing to reduce.
            warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting")
            run.trainer.fit(module, datamodule=data, ckpt_path=resume)
    except (KeyboardInterrupt, SystemExit):
        if not requests.requested:
            raise
        raise TrainingInterrupted(requests.signum) from None  # a second signal: stopped at once
    seconds = time.perf_counter() - start
    best, stop = run.best, run.last.stop
    last = str(stop.last_path) if stop.saved_inside_epoch else run.last.best_model_path or None
    score = float(best.best_model_score) if best.best_model_score is not None else None
    latest = run.trainer.callback_metrics.get("val/psnr")
    latest = float(latest) if latest is not None else None
    return RunResult(run_dir=Path(run.trainer.default_root_dir), best_checkpoint=best.best_model_path or None,
                     last_checkpoint=last, train_seconds=seconds, best_score=score, step_seconds=run.timer.seconds,
                     last_score=latest, warning=degradation(score, latest))


def train(cfg: Config, resume: str | None = None, enable_progress_bar: bool = True) -> RunResult:
    """Train as the config says (or go on from `resume`) in a locked run folder; Ctrl-C / SIGTERM stop after
    the current step with last.ckpt of it (TrainingInterrupted)."""
    check_devices(cfg)
    check_output_dir(cfg.output_dir)
    check_run_name(cfg)
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
    requests = StopRequests()
    run = build_trainer(cfg, module, data, run_dir, loggers, requests, resume=resume, changes=changes,
                        enable_progress_bar=enable_progress_bar)
    loggers[0].experiment  # the CSV writer starts before the lock file is in the folder (else it warns)
    try:
        # One writer per run folder: a second `--resume` of this run is refused, naming this process.
        with folder_lock(run_dir) if run.trainer.is_global_zero else contextlib.nullcontext(), requests:
            result = fit(run, module, data, requests, resume)
    except BaseException:
        if created:
            remove_if_empty(run_dir)
        raise
    result.run_dir = run_dir
    if result.warning and run.trainer.is_global_zero:
        warnings.warn(result.warning)
    return result
