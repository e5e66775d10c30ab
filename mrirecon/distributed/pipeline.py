"""Pipeline-parallel GLEAM on torch.distributed (`train.strategy: gleam_pipeline`, launched by torchrun),
trained by the same Lightning Trainer as single-process training (training/run.py: `build_trainer`, `fit`).

GLEAM's modules train on decoupled losses: module k needs only the detached output image of module
k-1. So K stage processes each own a contiguous group of modules (their unrolls, losses and Adam
optimizers) and run as a pipeline: stage k trains on batch t while stage k-1 already trains on batch
t+1. Only the image estimate travels between stages (point-to-point, asynchronous, one tensor per
batch); every stage reads the same batches itself (the same data module, seeded sampler and per-file mask
seeds), so k-space, coil maps and targets never leave the process that reads them. With D replicas per
stage (world = K x D), replica d of every stage reads shard d of each epoch and the replicas of a stage
average their gradients before every optimizer step (all-reduce on the stage's group).

Each rank runs its stage as a LightningModule (`PipelineStage`, a ReconModule that builds only its own
unrolls) on a Trainer built by `build_trainer`: limits, validation schedule, scheduler stepping, best/last
checkpoints, logging, resume and the Ctrl-C / SIGTERM stop are Lightning's and run.py's, for both paths.
`StageStrategy` tells Lightning this process's rank (only rank 0 logs and writes the run folder) and
runs its decisions (checkpoint or not, best or not) as collectives over the process group, so every stage
takes the same ones; a checkpoint is gathered from the stages' parts (`on_save_checkpoint`), so rank 0
writes the whole network's, which `evaluate` loads like any other. The strategy reports a world of one
to Lightning's loops: with a larger one they broadcast a SIGTERM flag before every batch, a collective
that would hold every stage in step with the others (no pipelining) and outside our fault handling.
Validation runs through the stages as training does; the metrics are gathered to every rank. Every
module is trained by `train_greedy_module`, the function single-process GLEAM uses, on the same batches
in the same order, so the weights equal those of single-process GLEAM (tested).

Faults: any wait on another process (a link or a collective) times out after `train.pipeline.timeout_s`;
every stage then stops with a PipelineError naming the stage that failed (exit status 4): one that died
(its process has ended, e.g. `kill -9`), one that is stopped (SIGSTOP: it is ended with SIGKILL, as torchrun
would after --shutdown_timeout, so every stage ends) or one that did not answer. A stage that torchrun
stops because another one died says which one. Ctrl-C / SIGTERM (to torchrun or to a stage) stop every
stage after one common training step: rank 0 fixes the step (a key in the rendezvous store, not a
collective per step), every stage trains up to it, and rank 0 writes last.ckpt of that step (exit status
128 + the signal's number).
"""
from __future__ import annotations

import contextlib
import datetime
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero_only
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.strategies import SingleDeviceStrategy
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor

from ..atomic import folder_lock
from ..config import Config, ConfigError
from ..data.datamodule import ReconDataModule
from ..training.checkpoints import save_checkpoint
from ..training.data_parallel import average_gradients
from ..training.guards import NonFiniteError, check_finite
from ..training.interrupts import StopRequests, TrainingInterrupted
from ..training.module import ReconModule, module_summary, validation_log
from ..training.run import RunResult, StopOnSignal, build_trainer, check_resume_compatible, fit
from ..training.run_folder import check_output_dir, check_run_name, remove_if_empty, resumed_run_dir, run_loggers
from ..training.strategies import greedy_modules, train_greedy_module
from .context import Layout, Peers, default_store, init_distributed, pipeline_layout
from .faults import STOP_AT, STOP_REQUESTED, Faults, PipelineError


# --------------------------------------------------------------------------------- point-to-point
class StageLink:
    """Image estimates between neighbouring stages: asynchronous sends (at most `in_flight` pending, so a stage
    runs ahead of the next one) and receives; every wait times out naming the other stage."""

    def __init__(self, layout: Layout, timeout_s: float, faults: Faults, in_flight: int = 2):
        self.layout, self.in_flight, self.faults = layout, in_flight, faults
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self._sends: list[tuple[Any, Tensor, int]] = []
        self._send_tag = self._recv_tag = 0

    def _wait(self, work: Any, peer_stage: int, what: str) -> None:
        peer = self.layout.rank_of(peer_stage)
        what = f"{what} stage {peer_stage} (rank {peer})"
        try:
            ok = work.wait(self.timeout)
        except RuntimeError as e:  # gloo: timeout or connection closed by the peer
            raise self.faults.error(what, e, peer) from None
        if ok is False:
            raise self.faults.error(what, None, peer)

    def receive(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """The previous stage's next image, a complex (B, M, *S) tensor sent as real pairs."""
        buffer = torch.empty((*shape, 2), dtype=torch.empty((), dtype=dtype).real.dtype, device=device)
        tag, self._recv_tag = self._recv_tag, self._recv_tag + 1
        peer = self.layout.rank_of(self.layout.stage - 1)
        try:
            work = dist.irecv(buffer, src=peer, tag=tag)
        except RuntimeError as e:  # the connection to the peer is already gone
            raise self.faults.error(f"receiving image {tag} from stage {self.layout.stage - 1} (rank {peer})", e,
                                    peer) from None
        self._wait(work, self.layout.stage - 1, f"receiving image {tag} from")
        return torch.view_as_complex(buffer)

    def send(self, x: Tensor) -> None:
        """Send the image on to the next stage without waiting for it to be received."""
        while len(self._sends) >= self.in_flight:
            self._finish_oldest()
        data = torch.view_as_real(x.detach()).contiguous()
        tag, self._send_tag = self._send_tag, self._send_tag + 1
        peer = self.layout.rank_of(self.layout.stage + 1)
        try:
            work = dist.isend(data, dst=peer, tag=tag)
        except RuntimeError as e:  # the connection to the peer is already gone
            raise self.faults.error(f"sending image {tag} to stage {self.layout.stage + 1} (rank {peer})", e,
                                    peer) from None
        self._sends.append((work, data, tag))

    def _finish_oldest(self) -> None:
        work, _, tag = self._sends.pop(0)
        self._wait(work, self.layout.stage + 1, f"sending image {tag} to")

    def flush(self) -> None:
        while self._sends:
            self._finish_oldest()


# ------------------------------------------------------------------------------ Lightning's parts
class StageData(ReconDataModule):
    """A stage's data: the batches of single-process training; replica d of every stage reads shard d."""

    def __init__(self, cfg: Config, layout: Layout):
        super().__init__(cfg)
        self.layout = layout

    def data_parallel_shard(self) -> tuple[int, int]:
        return self.layout.replicas, self.layout.replica


class StageStrategy(SingleDeviceStrategy):
    """One pipeline process on one device: Lightning learns its rank (only rank 0 logs and writes files) and
    runs its barriers, broadcasts and decisions as collectives over the process group, each failing into a
    PipelineError that names the stage (Faults). World size stays 1 for Lightning's loops (module docstring)."""

    strategy_name = "mrirecon_pipeline_stage"

    def __init__(self, device: torch.device, layout: Layout, faults: Faults):
        super().__init__(device=device)
        self.layout, self.faults = layout, faults
        self.global_rank = layout.rank

    @property
    def is_global_zero(self) -> bool:
        return self.layout.rank == 0

    def setup_environment(self) -> None:
        super().setup_environment()
        rank_zero_only.rank = fabric_rank_zero_only.rank = self.layout.rank

    def _collective(self, what: str, fn: Callable[[], Any]) -> Any:
        return self.faults.collective(what, fn) if self.layout.world_size > 1 else fn()

    def barrier(self, name: str | None = None, *args: Any, **kwargs: Any) -> None:
        if self.layout.world_size > 1:
            self._collective(f"waiting for every stage ({name or 'barrier'})", dist.barrier)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        self._collective("waiting for rank 0's decision", lambda: dist.broadcast_object_list(box, src=src))
        return box[0]

    def all_gather_object(self, obj: Any, what: str = "gathering from every stage") -> list:
        out: list = [None] * self.layout.world_size
        self._collective(what, lambda: dist.all_gather_object(out, obj))
        return out

    def gather_object(self, obj: Any, what: str = "gathering on rank 0") -> list | None:
        """`obj` of every rank, on rank 0 (None on the others)."""
        out: list | None = [None] * self.layout.world_size if self.layout.rank == 0 else None
        self._collective(what, lambda: dist.gather_object(obj, out, dst=0))
        return out

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 - Lightning's name
        votes = self.all_gather_object(bool(decision), "agreeing on a checkpoint decision")
        return sum(votes) == len(votes) if all else any(votes)


class PipelineStage(ReconModule):
    """One process of the pipeline: its unrolls (the others are placeholders), its modules' optimizers (built
    as single-process GLEAM builds them, `configure_optimizers` of ReconModule) and its part of each step."""

    def __init__(self, cfg: Config, layout: Layout):
        all_modules = greedy_modules(cfg.model.num_unrolls, cfg.train.num_modules)
        super().__init__(cfg.to_dict(), owned=[i for m in layout.modules for i in all_modules[m]])
        self.layout = layout
        self.module_ranges = {m: all_modules[m] for m in layout.modules}
        self._prefixes = tuple(f"net.unrolls.{i}." for m in layout.modules for i in all_modules[m])
        self.link: StageLink | None = None       # set by train_pipeline
        self.stage_group: Any = None             # the stage's replicas (D > 1)
        self.part_path: Path | None = None       # where this stage writes its own part of every checkpoint
        self.skipped_steps = 0
        self._losses: list[tuple[int, dict[int, float]]] = []
        self._val_loss = [0.0, 0]

    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        """GLEAM's groups (one per module), this stage's modules only."""
        groups = super().param_groups()
        return [groups[m] for m in self.layout.modules]

    @property
    def steps(self) -> int:
        """Training batches done (Lightning counts optimizer steps: one per module of this stage per batch)."""
        return self.trainer.global_step // len(self.layout.modules)

    # ------------------------------------------------------------------ the chain
    def _image_in(self, batch: Any, A: Any) -> Tensor:
        """Stage 0 starts from the zero-filled image A^H y; the others receive the previous stage's output."""
        if self.layout.is_first:
            return A.H(batch.kspace)
        shape = (batch.kspace.shape[0], self.cfg.model.num_maps, *batch.kspace.shape[2:])  # what A^H gives
        return self.link.receive(shape, batch.kspace.dtype, self.device)

    def _image_out(self, x: Tensor) -> None:
        if not self.layout.is_last:
            self.link.send(x)

    def _before_step(self, m: int, step: int) -> Callable[[Tensor], None]:
        params = self.trainer.optimizers[m - self.layout.modules.start].param_groups[0]["params"]

        def hook(loss: Tensor) -> None:
            if self.stage_group is not None:  # data parallel inside the stage; the loss is averaged along
                self.link.faults.collective(f"averaging module {m + 1}'s gradients with the other replicas of "
                                            "this stage", lambda: average_gradients(params, self.stage_group, extra=loss))
            try:
                check_finite({f"loss_module{m + 1}": loss}, step=step, params=params, module=m + 1)
            except NonFiniteError:
                if self.cfg.train.nonfinite != "skip":
                    raise
                for p in params:  # Adam leaves parameters without a gradient unchanged
                    p.grad = None
                self.skipped_steps += 1
        return hook

    def training_step(self, batch, batch_idx):
        A = self.net.sense(batch.maps, batch.mask)
        x = self._image_in(batch, A)
        step, losses = self.steps, {}
        for m, opt in zip(self.layout.modules, self._optimizer_list()):
            x, loss = train_greedy_module(self.net, self.module_ranges[m], x, A, batch.kspace, batch.target,
                                          self.loss_fn, opt, backward=self.manual_backward,
                                          before_step=self._before_step(m, step))
            losses[m + 1] = float(loss)
        self._image_out(x)
        self._losses.append((step, losses))
        last = max(losses)
        self.log(f"train/loss_module{last}", losses[last], prog_bar=True, logger=False,
                 batch_size=batch.kspace.shape[0])

    def log_training_losses(self) -> None:
        """Rank 0 logs every stage's module losses of the steps since the last call (rows as single-process
        GLEAM's: train/loss_module<k>, train/loss of the last module, every log_every_n_steps batches)."""
        every = self.trainer.strategy.gather_object(self._losses, "gathering the module losses on rank 0")
        self._losses = []
        if every is None:
            return
        by_step: dict[int, dict[int, list[float]]] = {}
        for losses in every:
            for s, row in losses:
                for m, loss in row.items():
                    by_step.setdefault(s, {}).setdefault(m, []).append(loss)
        n, last = self.cfg.train.log_every_n_steps, self.cfg.train.num_modules
        for s in sorted(by_step):
            if (s + 1) % n == 0:  # Lightning's rule for logging a step
                row = {f"train/loss_module{m}": sum(v) / len(v) for m, v in by_step[s].items()}
                if last in by_step[s]:
                    row["train/loss"] = row[f"train/loss_module{last}"]
                for logger in self.loggers:
                    logger.log_metrics({**row, "epoch": self.current_epoch}, step=s)

    def on_train_epoch_end(self):
        super().on_train_epoch_end()  # the schedulers step
        self.link.flush()
        self.log_training_losses()

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._val_loss = [0.0, 0]

    def validation_step(self, batch, batch_idx):
        A = self.net.sense(batch.maps, batch.mask)
        x = self._image_in(batch, A)
        images = {}
        for m in self.layout.modules:
            x = self.net.apply_unrolls(x, A, batch.kspace, self.module_ranges[m])
            images[f"module{m + 1}"] = x
        self._image_out(x)
        images["target"] = batch.target
        self._val.add_batch(batch, images)
        if self.layout.is_last:
            bs = batch.kspace.shape[0]
            self._val_loss[0] += float(self.loss_fn(x, batch.target)) * bs
            self._val_loss[1] += bs

    def on_validation_epoch_end(self):
        """Every stage's anytime metrics of its modules, gathered to every rank (every rank then takes the same
        checkpoint decisions), logged as single-process GLEAM logs them."""
        vols = self._val.volumes()
        self._val.clear()
        mine = {m + 1: module_summary(vols, f"module{m + 1}", self.cfg) for m in self.layout.modules} if vols else {}
        payload = (mine, tuple(self._val_loss)) if self.layout.replica == 0 else ({}, (0.0, 0))
        self.link.flush()  # first: a next stage that does not take its images is named by the link
        every = self.trainer.strategy.all_gather_object(payload, "gathering the validation metrics")
        summaries = {k: v for s, _ in every for k, v in s.items()}
        if not summaries:
            return
        metrics = validation_log(summaries)
        count = sum(c for _, (_, c) in every)
        if count:
            metrics["val/loss"] = sum(v for _, (v, _) in every) / count
        self.log_validation(metrics)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Rank 0's checkpoint is the whole network's: the stages' weights, optimizer and scheduler states in
        module order (the layout ReconModule and evaluate read). Each stage also writes its own part."""
        self.link.flush()
        part = None
        if self.layout.replica == 0:
            part = {"stage": self.layout.stage, "modules": list(self.layout.modules),
                    "state_dict": {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(self._prefixes)},
                    "optimizer_states": checkpoint.get("optimizer_states", []),
                    "lr_schedulers": checkpoint.get("lr_schedulers", [])}
            if self.part_path is not None:
                save_checkpoint({**part, "state_dict": {k[len("net."):]: v for k, v in part["state_dict"].items()},
                                 "hyper_parameters": {"config": self.cfg.to_dict()}}, self.part_path)
        parts = self.trainer.strategy.gather_object(part, "gathering the stages' checkpoint parts on rank 0")
        if parts is not None:
            parts = sorted((p for p in parts if p is not None), key=lambda p: p["stage"])
            checkpoint["state_dict"] = {k: v for p in parts for k, v in p["state_dict"].items()}
            for key in ("optimizer_states", "lr_schedulers"):
                checkpoint[key] = [s for p in parts for s in p[key]]
        checkpoint["global_step"] = self.steps * self.cfg.train.num_modules  # as single-process GLEAM counts
        checkpoint["pipeline"] = {"step": self.steps, "stages": self.layout.stages}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """From a whole network's checkpoint, this stage's weights and its modules' optimizer/scheduler states."""
        if "loops" not in checkpoint:  # written by the pipeline's own loop (before December 2026)
            warnings.warn("resuming from a checkpoint of the pipeline's former loop: weights and optimizer states are "
                          "restored, the epoch and step count start again at 0")
        sd, mine = checkpoint["state_dict"], list(self.state_dict())
        missing = [k for k in mine if k not in sd]
        if missing:
            raise ValueError(f"checkpoint lacks weights of this stage's unrolls, e.g. {missing[:3]}")
        checkpoint["state_dict"] = {k: sd[k] for k in mine}
        for key in ("optimizer_states", "lr_schedulers"):
            states = checkpoint.get(key, [])
            checkpoint[key] = [states[m] for m in self.layout.modules if m < len(states)]

    def example_batch(self) -> Any:
        """The first training batch on this stage's device (benchmarks measure a module step with it)."""
        batch = next(iter(self.trainer.datamodule.train_dataloader()))
        batch = type(batch)(*(v.to(self.device) if isinstance(v, Tensor) else v for v in batch))
        return self.trainer.datamodule.batch_transform(batch)


class PipelineStop(StopOnSignal):
    """The Ctrl-C / SIGTERM stop of run.py, with the stop step agreed through the rendezvous store (stages run
    apart, so no collective per step): the first request anywhere is announced there; rank 0 answers it by
    fixing the stop step (its next one, which every rank reaches after the announcement: replicas are in step
    with rank 0, later stages behind it); every rank stops after it, and rank 0 writes last.ckpt of it."""

    def __init__(self, requests: StopRequests, last_path: Path, data: ReconDataModule, layout: Layout):
        super().__init__(requests, last_path, data)
        self.layout = layout
        self.stop_at: int | None = None
        self.signum: int | None = None

    def _stop_requested(self, trainer) -> bool:
        step = trainer.lightning_module.steps
        if self.stop_at is None:
            store, signum = default_store(), self.requests.signum
            if signum is not None and self.signum is None:
                self.signum = signum
                store.set(STOP_REQUESTED, str(signum))
            if self.layout.rank == 0:
                if signum is not None or store.check([STOP_REQUESTED]):
                    self.signum = self.signum or int(store.get(STOP_REQUESTED))
                    self.stop_at = step + 1
                    store.set(STOP_AT, str(self.stop_at))
            elif store.check([STOP_AT]):
                self.stop_at = int(store.get(STOP_AT))
                self.signum = self.signum or int(store.get(STOP_REQUESTED))
        return self.stop_at is not None and step >= self.stop_at

    def _stop(self, trainer, step: int, saved: bool = False) -> None:
        stage = trainer.lightning_module
        stage.link.flush()
        stage.log_training_losses()
        if not saved:
            trainer.save_checkpoint(self.last_path)
        raise TrainingInterrupted(self.signum or 15, str(self.last_path), stage.steps, quiet=self.layout.rank != 0)


class AfterTraining(Callback):
    """Runs `after(stage)` when training ends, on every rank, while the stage is still on its device."""

    def __init__(self, after: Callable[[PipelineStage], Any]):
        self.after = after

    def on_train_end(self, trainer, pl_module) -> None:
        self.after(pl_module)


# ------------------------------------------------------------------------------------ the stage
@dataclass
class StageResult(RunResult):
    steps: int = 0
    stage: int = 0
    rank: int = 0
    peak_memory_mib: float | None = None


def _on_rank0(fn: Callable[[], Any], layout: Layout, faults: Faults) -> Any:
    """fn() run on rank 0, its result broadcast to every rank. When it fails, rank 0 raises the error and
    every other rank a PipelineError quoting it, so no rank waits for a rank 0 that has given up."""
    box: list[Any] = [None]
    error: BaseException | None = None
    if layout.rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error, box[0] = e, ("error", f"{type(e).__name__}: {e}")
    if layout.world_size > 1:
        faults.collective("waiting for rank 0", lambda: dist.broadcast_object_list(box, src=0))
    if error is not None:
        raise error
    status, value = box[0]
    if status == "error":
        raise PipelineError(f"pipeline rank {layout.rank}: rank 0 failed: {value}")
    return value


def _check_settings(cfg: Config) -> None:
    t = cfg.train
    if t.precision not in ("32-true", "32"):
        raise ConfigError(f"train.precision: the pipeline trains in 32-true only, got {t.precision!r}")
    if cfg.model.share_weights:
        raise ConfigError("model.share_weights: gleam_pipeline trains modules independently; use share_weights: false")


def train_pipeline(cfg: Config, resume: str | None = None, enable_progress_bar: bool = True,
                   after: Callable[[PipelineStage], Any] | None = None) -> StageResult:
    """Run this process's stage of the pipeline (call on every rank torchrun starts). `after(stage)` runs
    on every rank when training ends, on the stage's device (benchmarks measure there)."""
    ctx = init_distributed(cfg)
    held = contextlib.ExitStack()  # rank 0: the run folder's lock, for the whole run
    requests = StopRequests(escalate=not ctx.launched).__enter__()
    if not ctx.launched:  # in-process (a world of one): the caller's handlers come back
        held.callback(requests.__exit__, None, None, None)
    try:
        layout = pipeline_layout(cfg, ctx.world_size, ctx.rank)
        _check_settings(cfg)
        t = cfg.train
        pl.seed_everything(t.seed, workers=True, verbose=False)
        data = StageData(cfg, layout)
        data.setup("fit")  # validates every file before the first step
        stage = PipelineStage(cfg, layout)
        peers = Peers.exchange(layout.rank, layout.world_size)
        faults = Faults(layout, peers, t.pipeline.timeout_s)
        stage.link = StageLink(layout, t.pipeline.timeout_s, faults)
        requests.on_signal = faults.on_signal
        for s in range(layout.stages):  # every rank creates every stage group, in the same order (torch requires it)
            group = dist.new_group(layout.stage_ranks(s)) if layout.replicas > 1 else None
            if s == layout.stage:
                stage.stage_group = group
        loggers: list = []

        def open_run() -> str:
            check_output_dir(cfg.output_dir)
            check_run_name(cfg)
            continued = resumed_run_dir(resume) if resume else None
            loggers.extend(run_loggers(cfg, continued))
            run_dir = Path(loggers[0].log_dir).resolve()
            loggers[0].experiment  # the CSV writer starts before the folder has other files in it
            held.enter_context(folder_lock(run_dir))  # one writer per run folder (a second resume is refused)
            return str(run_dir)

        changes = check_resume_compatible(cfg, resume) if resume else {}
        run_dir = Path(_on_rank0(open_run, layout, faults))
        stage.part_path = run_dir / "checkpoints" / "stages" / f"stage{layout.stage}.ckpt"
        stop = PipelineStop(requests, run_dir / "checkpoints" / "last.ckpt", data, layout)
        strategy = StageStrategy(ctx.device, layout, faults)
        run = build_trainer(cfg, stage, data, run_dir, loggers if layout.rank == 0 else False, requests,
                            resume=resume, changes=changes, stop=stop, strategy=strategy,
                            accelerator="gpu" if ctx.device.type == "cuda" else "cpu",
                            devices=[ctx.device.index] if ctx.device.type == "cuda" else 1,
                            enable_progress_bar=enable_progress_bar and layout.rank == 0)
        if after is not None:
            run.trainer.callbacks.append(AfterTraining(after))
        try:
            result = fit(run, stage, data, requests, resume)
        except BaseException:
            if layout.rank == 0 and not resume:  # a run that failed before it saved anything leaves no folder
                remove_if_empty(run_dir)
            raise
        stage.link.flush()
        peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.device.type == "cuda" else None
        common = {f.name: getattr(result, f.name) for f in fields(result)}  # the stage's RunResult, by name
        return StageResult(**{**common, "run_dir": run_dir}, steps=stage.steps, stage=layout.stage,
                           rank=layout.rank, peak_memory_mib=peak)
    finally:
        held.close()
        if ctx.launched:  # the process ends next: torchrun's SIGTERM to the survivors must not cut its message
            requests.ignore()
        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["PipelineError", "PipelineStage", "StageLink", "StageResult", "StageStrategy", "train_pipeline"]
