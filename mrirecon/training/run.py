"""Build the Trainer for a config and run it (what `train.py` calls)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from ..config import Config, save_config
from .datamodule import ReconDataModule
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


def _loggers(cfg: Config):
    csv = CSVLogger(save_dir=cfg.output_dir, name=cfg.name)
    loggers = [csv]
    try:
        import tensorboard  # noqa: F401
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=cfg.output_dir, name=cfg.name, version=csv.version))
    except ImportError:
        pass  # TensorBoard is optional: CSV logs are always written
    return loggers


def check_resume_compatible(cfg: Config, ckpt_path: str) -> None:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    saved = ckpt.get("hyper_parameters", {}).get("config")
    if saved is None:
        raise ValueError(f"{ckpt_path}: not an mrirecon checkpoint (no config inside)")
    now = cfg.to_dict()
    diffs = [f"model.{k}: checkpoint {saved['model'].get(k)!r} vs config {v!r}"
             for k, v in now["model"].items() if saved["model"].get(k) != v]
    for k in ("strategy", "num_modules"):
        if saved["train"].get(k) != now["train"][k]:
            diffs.append(f"train.{k}: checkpoint {saved['train'].get(k)!r} vs config {now['train'][k]!r}")
    if diffs:
        raise ValueError(f"{ckpt_path}: checkpoint was trained with another architecture/strategy: " + "; ".join(diffs))


def train(cfg: Config, resume: str | None = None, enable_progress_bar: bool = True) -> RunResult:
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    if resume:
        check_resume_compatible(cfg, resume)
    data = ReconDataModule(cfg)
    data.setup("fit")  # validates every file before the first step
    module = ReconModule(cfg.to_dict())
    loggers = _loggers(cfg)
    run_dir = Path(loggers[0].log_dir)
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/psnr", mode="max",
                           filename="best-epoch{epoch}", auto_insert_metric_name=False)
    # A checkpoint of the latest state after every epoch, for exact resume. (ModelCheckpoint's own
    # save_last only writes when a monitored checkpoint is written, i.e. not after an epoch that
    # did not improve val/psnr.)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    t = cfg.train
    timer = StepTimer()
    trainer = pl.Trainer(
        max_epochs=t.max_epochs, max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices,
        precision=t.precision, logger=loggers, callbacks=[ckpt, last, SaveConfig(cfg, run_dir / "config.yaml"), timer],
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.check_val_every_n_epoch, enable_progress_bar=enable_progress_bar,
        deterministic="warn", enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    seconds = time.perf_counter() - start
    best = ckpt.best_model_path or None
    score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    return RunResult(run_dir, best, last.best_model_path or None, seconds, score, timer.seconds)
