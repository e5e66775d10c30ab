"""Pipeline-parallel GLEAM on torch.distributed (`train.strategy: gleam_pipeline`, launched by torchrun).

GLEAM's modules train on decoupled losses: module k needs only the detached output image of module
k-1. So K stage processes each own a contiguous group of modules (their unrolls, losses and Adam
optimizers) and run as a pipeline: stage k trains on batch t while stage k-1 already trains on batch
t+1. Only the image estimate travels between stages (point-to-point, asynchronous, one tensor per
batch); every stage reads the same batches itself (same seeded sampler, same per-file mask seeds), so
k-space, coil maps and targets never leave the process that reads them. With D replicas per stage
(world = K x D), replica d of every stage forms one chain on its own shard of each epoch's batches and
the replicas of a stage average their gradients before every optimizer step (all-reduce on the stage's
group), which is data parallelism inside each stage.

Every module is trained by `train_greedy_module`, the same function single-process GLEAM uses, on the
same batches in the same order, so the parameters equal those of single-process GLEAM (tested).
Validation runs the chain once per epoch (anytime metrics of every module, gathered to rank 0);
rank 0 logs to the run directory's metrics.csv and writes last.ckpt / best-epoch<e>.ckpt in the format
`evaluate.py` loads; each stage also writes its own part (stages/stage<k>.ckpt).

Faults: any wait on another process (a link or a collective) times out after `train.pipeline.timeout_s`;
every stage then stops with a PipelineError naming the stage that failed (exit status 4): one that died
(its process has ended, e.g. `kill -9`), one that is stopped (SIGSTOP: it is ended with SIGKILL, as torchrun
would after --shutdown_timeout, so every stage ends) or one that did not answer. A stage that torchrun
stops because another one died says which one. Ctrl-C / SIGTERM (to torchrun or to a stage) stop every
stage after one common training step: rank 0 fixes the step (a key in the rendezvous store), every stage
trains up to it, and rank 0 writes last.ckpt of that step (exit status 128 + the signal's number).
"""
from __future__ import annotations

import contextlib
import datetime
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from ..atomic import folder_lock
from ..config import Config, ConfigError, save_config
from ..evaluation.volumes import VolumeAccumulator
from ..models.build import build_network
from ..models.unrolled import UnrolledNet
from ..training.checkpoints import file_sha256, load_checkpoint, save_checkpoint
from ..data.datamodule import EpochSampler, EpochTagged, ReconDataModule, shape_batches
from ..training.guards import NonFiniteError, check_finite
from ..training.losses import build_loss
from ..training.run import apply_optimizer_changes, check_resume_compatible
from ..training.run_folder import (check_output_dir, check_run_name, checkpoint_in, record_resume,
                                   remove_if_empty, resumed_run_dir, run_loggers)
from ..training.module import module_summary, validation_log
from ..training.optim import build_optimizers
from ..training.schedule import batch_limit, training_done, validation_due
from ..training.strategies import greedy_modules, module_parameters, train_greedy_module
from ..training.interrupts import StopRequests, TrainingInterrupted
from .context import DistContext, Layout, Peers, default_store, init_distributed, pipeline_layout
from .faults import STOP_AT, STOP_REQUESTED, Faults, PipelineError
from ..training.data_parallel import average_gradients


# ------------------------------------------------------------------------------------------ batches
def train_batches(ds, cfg: Config, epoch: int) -> list[list[int]]:
    """The epoch's training batches as dataset indices tagged with the epoch (what Lightning's loader of
    `ReconDataModule` yields for single-process training: EpochSampler, batches of one shape, last kept)."""
    n = len(ds)
    sampler = EpochSampler(n, cfg.train.seed)
    sampler.set_epoch(epoch)
    shapes = [ds.item_shape(i) for i in range(n)]
    batches = shape_batches(sampler, lambda tagged: shapes[tagged % n], cfg.data.batch_size)
    return batches[:batch_limit(len(batches), cfg.train.limit_train_batches)]


def replica_shard(batches: list[list[int]], layout: Layout) -> list[list[int]]:
    """Replica d's batches: d, d + D, ... of the epoch. The last D-1 batches at most are left out when D does
    not divide their number (every step all-reduces across the D replicas of a stage)."""
    steps = len(batches) // layout.replicas
    return [batches[t * layout.replicas + layout.replica] for t in range(steps)]


def _to(batch: Any, device: torch.device) -> Any:
    return type(batch)(*(v.to(device) if isinstance(v, Tensor) else v for v in batch))


# --------------------------------------------------------------------------------- point-to-point
@dataclass
class _Recv:
    buffer: Tensor
    work: Any
    tag: int


class StageLink:
    """Image estimates between neighbouring stages: asynchronous sends (at most `in_flight` pending) and
    receives posted ahead of the work that needs them; every wait times out naming the other stage."""

    def __init__(self, layout: Layout, timeout_s: float, faults: "Faults", in_flight: int = 2):
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

    def post_recv(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> _Recv:
        """Post the receive of the previous stage's next image, a complex (B, M, *S) tensor sent as real pairs."""
        buffer = torch.empty((*shape, 2), dtype=torch.empty((), dtype=dtype).real.dtype, device=device)
        tag, self._recv_tag = self._recv_tag, self._recv_tag + 1
        peer = self.layout.rank_of(self.layout.stage - 1)
        try:
            work = dist.irecv(buffer, src=peer, tag=tag)
        except RuntimeError as e:  # the connection to the peer is already gone
            raise self.faults.error(f"receiving image {tag} from stage {self.layout.stage - 1} (rank {peer})", e,
                                    peer) from None
        return _Recv(buffer, work, tag)

    def wait_recv(self, r: _Recv) -> Tensor:
        self._wait(r.work, self.layout.stage - 1, f"receiving image {r.tag} from")
        return torch.view_as_complex(r.buffer)

    def send(self, x: Tensor) -> None:
        """Send the image on to the next stage without waiting for it to be received."""
        while len(self._sends) >= self.in_flight:
            self._finish_oldest()
        data = torch.view_as_real(x).contiguous()
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


# ------------------------------------------------------------------------------------ the stage
@dataclass
class StageResult:
    run_dir: Path
    best_checkpoint: str | None
    last_checkpoint: str | None
    train_seconds: float
    best_score: float | None
    step_seconds: float = 0.0
    steps: int = 0
    stage: int = 0
    rank: int = 0
    peak_memory_mib: float | None = None


@dataclass
class _Progress:
    epoch: int = 0          # the epoch being trained
    batch: int = 0          # steps of that epoch already done (resume mid-epoch)
    step: int = 0           # steps done in total (a step: one batch per replica through this stage)
    best_score: float | None = None
    best_path: str | None = None


class PipelineStage:
    """One process of the pipeline: its unrolls, modules, optimizers and its part of the loop."""

    def __init__(self, cfg: Config, ctx: DistContext, layout: Layout):
        self.cfg, self.ctx, self.layout, t = cfg, ctx, layout, cfg.train
        if t.precision not in ("32-true", "32"):
            raise ConfigError(f"train.precision: the pipeline trains in 32-true only, got {t.precision!r}")
        if cfg.model.share_weights:
            raise ConfigError("model.share_weights: gleam_pipeline trains modules independently; use share_weights: false")
        pl.seed_everything(t.seed, workers=True, verbose=False)
        self.data = ReconDataModule(cfg)
        self.data.setup("fit")  # validates every file before the first step
        all_modules = greedy_modules(cfg.model.num_unrolls, t.num_modules)
        self.module_ranges = {m: all_modules[m] for m in layout.modules}
        owned = [i for m in layout.modules for i in all_modules[m]]
        self.net: UnrolledNet = build_network(cfg, owned=owned).to(ctx.device)
        groups = [module_parameters(self.net, self.module_ranges[m]) for m in layout.modules]
        self.optimizers, self.schedulers = build_optimizers(t, groups)
        self.groups = groups
        self.loss_fn = build_loss(t.loss)
        self.peers = Peers.exchange(layout.rank, layout.world_size)
        self.faults = Faults(layout, self.peers, t.pipeline.timeout_s)
        self.link = StageLink(layout, t.pipeline.timeout_s, self.faults)
        self.requests: StopRequests | None = None  # set by train_pipeline while training
        self.stop_at: int | None = None   # the common step every stage stops before (Ctrl-C / SIGTERM)
        self.stop_signal: int | None = None
        # Every rank creates every stage group, in the same order (torch.distributed requires it).
        self.stage_group = None
        for s in range(layout.stages):
            g = dist.new_group(layout.stage_ranks(s)) if layout.replicas > 1 else None
            if s == layout.stage:
                self.stage_group = g
        self.progress = _Progress()
        self.skipped_steps = 0
        self.step_seconds = 0.0

    # ------------------------------------------------------------------ training
    def _before_step(self, m: int) -> Callable[[Tensor], None]:
        params = self.groups[m - self.layout.modules.start]

        def hook(loss: Tensor) -> None:
            if self.stage_group is not None:  # data parallel inside the stage; the loss is averaged along
                self.faults.collective(f"averaging module {m + 1}'s gradients with the other replicas of this stage",
                                       lambda: average_gradients(params, self.stage_group, extra=loss))
            try:
                check_finite({f"loss_module{m + 1}": loss}, step=self.progress.step, params=params, module=m + 1)
            except NonFiniteError:
                if self.cfg.train.nonfinite != "skip":
                    raise
                for p in params:  # Adam leaves parameters without a gradient unchanged
                    p.grad = None
                self.skipped_steps += 1
        return hook

    def stop_due(self) -> bool:
        """Whether to stop before the next training step. The first Ctrl-C / SIGTERM anywhere is announced in
        the store; rank 0 answers it by fixing the stop step (its next step + 1, which every rank reaches after
        the announcement: replicas are in step with rank 0, later stages behind it); every rank stops there."""
        if self.stop_at is None:
            store, signum = default_store(), self.requests.signum if self.requests else None
            if signum is not None and self.stop_signal is None:
                self.stop_signal = signum
                store.set(STOP_REQUESTED, str(signum))
            if self.layout.rank == 0:
                if signum is not None or store.check([STOP_REQUESTED]):
                    self.stop_signal = self.stop_signal or int(store.get(STOP_REQUESTED))
                    self.stop_at = self.progress.step + 1
                    store.set(STOP_AT, str(self.stop_at))
            elif store.check([STOP_AT]):
                self.stop_at = int(store.get(STOP_AT))
                self.stop_signal = self.stop_signal or int(store.get(STOP_REQUESTED))
        return self.stop_at is not None and self.progress.step >= self.stop_at

    def _loader(self, split: str, batches: list[list[int]]) -> DataLoader:
        ds = self.data.dataset(split)
        data = EpochTagged(ds, ds.transform)  # workers read and mask; the batch transform runs in fetch()
        return DataLoader(data, batch_sampler=batches, num_workers=self.cfg.data.num_workers)

    def _chain(self, loader: DataLoader, work: Callable[[Any, Tensor, Any], Tensor], stoppable: bool = False) -> int:
        """Run `work(batch, x_in, A) -> x_out` over the loader as a link of the chain: the first stage starts
        from the zero-filled image, the others receive theirs (posted one batch ahead); all but the last
        send their output on. `stoppable`: a stop request ends it before a batch (`stop_due`). Returns the
        number of batches done."""
        first, last = self.layout.is_first, self.layout.is_last
        batches = iter(loader)

        def fetch():
            b = next(batches, None)
            if b is None:
                return None
            b = self.data.batch_transform(_to(b, self.ctx.device))
            image = (b.kspace.shape[0], self.cfg.model.num_maps, *b.kspace.shape[2:])  # what A^H gives
            return b, (None if first else self.link.post_recv(image, b.kspace.dtype, self.ctx.device))

        done, pending = 0, fetch()
        while pending is not None:
            if stoppable and self.stop_due():
                break  # the receive posted for this batch is left: no stage sends it
            batch, recv = pending
            pending = fetch()  # the next batch is read and its receive posted before this one's work
            A = self.net.sense(batch.maps, batch.mask)
            x = A.H(batch.kspace) if first else self.link.wait_recv(recv)
            x = work(batch, x, A)
            if not last:
                self.link.send(x)
            done += 1
        self.link.flush()
        return done

    def train_epoch(self, epoch: int, losses: list, bar: Any) -> int:
        """Train this stage's modules on the epoch's batches from `progress.batch` on; returns steps done."""
        t = self.cfg.train
        ds = self.data.dataset("train")
        batches = replica_shard(train_batches(ds, self.cfg, epoch), self.layout)[self.progress.batch:]
        if t.max_steps > 0:
            batches = batches[:max(0, t.max_steps - self.progress.step)]
        if not batches:
            return 0

        def work(batch, x, A):
            start = time.perf_counter()
            for m, opt in zip(self.layout.modules, self.optimizers):
                x, loss = train_greedy_module(self.net, self.module_ranges[m], x, A, batch.kspace, batch.target,
                                              self.loss_fn, opt, before_step=self._before_step(m))
                losses.append((self.progress.step, m + 1, float(loss)))
            if self.ctx.device.type == "cuda":
                torch.cuda.synchronize(self.ctx.device)
            self.step_seconds += time.perf_counter() - start
            self.progress.step += 1
            self.progress.batch += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({f"loss_module{losses[-1][1]}": f"{losses[-1][2]:.4g}"}, refresh=False)
            return x

        self.net.train()
        return self._chain(self._loader("train", batches), work, stoppable=True)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> tuple[dict[int, dict], tuple[float, int]]:
        """Anytime metrics of this stage's modules on the validation split (replica 0 chain only)."""
        if self.layout.replica != 0:
            return {}, (0.0, 0)
        ds = self.data.dataset("val")
        batches = shape_batches(range(len(ds)), ds.item_shape, self.cfg.data.batch_size)
        batches = batches[:batch_limit(len(batches), self.cfg.train.limit_val_batches)]
        acc = VolumeAccumulator({fi.path.name: fi.recon_size for fi in ds.files})
        loss_sum, count = 0.0, 0

        def work(batch, x, A):
            nonlocal loss_sum, count
            images = {}
            for m in self.layout.modules:
                x = self.net.apply_unrolls(x, A, batch.kspace, self.module_ranges[m])
                images[f"module{m + 1}"] = x
            images["target"] = batch.target
            acc.add_batch(batch, images)
            if self.layout.is_last:
                bs = batch.kspace.shape[0]
                loss_sum += float(self.loss_fn(x, batch.target)) * bs
                count += bs
            return x

        self.net.eval()
        self._chain(self._loader("val", batches), work)
        vols = acc.volumes()
        return {m + 1: module_summary(vols, f"module{m + 1}", self.cfg) for m in self.layout.modules}, (loss_sum, count)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """This stage's part of a checkpoint: its unrolls' weights, its modules' optimizer/scheduler states."""
        owned = {f"unrolls.{i}." for m in self.layout.modules for i in self.module_ranges[m]}
        weights = {k: v.detach().cpu() for k, v in self.net.state_dict().items()
                   if any(k.startswith(p) for p in owned)}
        return {"stage": self.layout.stage, "modules": list(self.layout.modules), "state_dict": weights,
                "optimizer_states": [o.state_dict() for o in self.optimizers],
                "lr_schedulers": [s.state_dict() for s in self.schedulers]}

    def load(self, ckpt: dict) -> None:
        """Take this stage's weights and optimizer states from a merged checkpoint."""
        sd = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        mine = self.net.state_dict()
        missing = [k for k in mine if k not in sd]
        if missing:
            raise ValueError(f"checkpoint lacks weights of this stage's unrolls, e.g. {missing[:3]}")
        self.net.load_state_dict({k: sd[k] for k in mine})
        opt_states = ckpt.get("optimizer_states", [])
        for m, opt in zip(self.layout.modules, self.optimizers):
            if m < len(opt_states):
                opt.load_state_dict(opt_states[m])
        for m, s in zip(self.layout.modules, self.schedulers):
            if m < len(ckpt.get("lr_schedulers", [])):
                s.load_state_dict(ckpt["lr_schedulers"][m])
        p = ckpt.get("pipeline", {})
        self.progress = _Progress(epoch=p.get("epoch", ckpt.get("epoch", 0) + 1), batch=p.get("batch", 0),
                                  step=p.get("step", 0), best_score=p.get("best_score"), best_path=p.get("best_path"))


# --------------------------------------------------------------------------------- rank 0's part
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
    faults.collective("waiting for rank 0", lambda: dist.broadcast_object_list(box, src=0))
    if error is not None:
        raise error
    status, value = box[0]
    if status == "error":
        raise PipelineError(f"pipeline rank {layout.rank}: rank 0 failed: {value}")
    return value


def merged_checkpoint(cfg: Config, parts: list[dict], progress: _Progress, epoch: int) -> dict:
    """One checkpoint of the whole network from the stages' parts, in the layout `load_module` reads
    (Lightning's: state_dict with the "net." prefix, hyper_parameters.config, optimizer_states in module order)."""
    parts = sorted(parts, key=lambda p: p["stage"])
    state = {f"net.{k}": v for p in parts for k, v in p["state_dict"].items()}
    return {
        "state_dict": state,
        "hyper_parameters": {"config": cfg.to_dict()},
        "optimizer_states": [o for p in parts for o in p["optimizer_states"]],
        "lr_schedulers": [s for p in parts for s in p["lr_schedulers"]],
        "epoch": epoch,
        "global_step": progress.step * cfg.train.num_modules,
        "pytorch-lightning_version": pl.__version__,
        "pipeline": {"epoch": progress.epoch, "batch": progress.batch, "step": progress.step,
                     "best_score": progress.best_score,
                     # relative to the checkpoints folder: a copied run folder keeps its own best record
                     "best_path": Path(progress.best_path).name if progress.best_path else None,
                     "stages": len(parts)},
    }


def _log_epoch(loggers: list, cfg: Config, layout: Layout, payloads: list[dict], epoch: int, step: int) -> dict:
    """rank 0: per-step module losses (mean over replicas) and the epoch's validation metrics."""
    by_step: dict[int, dict[int, list[float]]] = {}
    for p in payloads:
        for s, m, loss in p["losses"]:
            by_step.setdefault(s, {}).setdefault(m, []).append(loss)
    n, last = cfg.train.log_every_n_steps, cfg.train.num_modules
    for s in sorted(by_step):
        if (s + 1) % n == 0:
            row = {f"train/loss_module{m}": sum(v) / len(v) for m, v in by_step[s].items()}
            if last in by_step[s]:
                row["train/loss"] = row[f"train/loss_module{last}"]
            row["epoch"] = epoch
            for logger in loggers:
                logger.log_metrics(row, step=s)
    summaries = {k: v for p in payloads for k, v in p["val"].items()}
    metrics: dict[str, float] = {}
    if summaries:
        metrics = validation_log(summaries)
        loss_sum = sum(p["val_loss"][0] for p in payloads)
        count = sum(p["val_loss"][1] for p in payloads)
        if count:
            metrics["val/loss"] = loss_sum / count
        for logger in loggers:
            logger.log_metrics({**metrics, "epoch": epoch}, step=max(step - 1, 0))
    for logger in loggers:
        logger.save()
    return metrics


def _old_checkpoint_folder(best_path: str | None) -> str | None:
    """The folder an absolute best path of an older checkpoint was written in."""
    return str(Path(best_path).parent) if best_path and Path(best_path).is_absolute() else None


def _peak_memory_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def train_pipeline(cfg: Config, resume: str | None = None, enable_progress_bar: bool = True,
                   after: Callable[[PipelineStage], Any] | None = None) -> StageResult:
    """Run this process's stage of the pipeline (call on every rank torchrun starts). `after(stage)` runs
    on every rank once training is done, before the process group closes (benchmarks measure there)."""
    ctx = init_distributed(cfg)
    held = contextlib.ExitStack()  # rank 0: the run folder's lock, for the whole run
    requests = StopRequests(escalate=not ctx.launched).__enter__()
    if not ctx.launched:  # in-process (a world of one): the caller's handlers come back
        held.callback(requests.__exit__, None, None, None)
    try:
        layout = pipeline_layout(cfg, ctx.world_size, ctx.rank)
        stage = PipelineStage(cfg, ctx, layout)
        stage.requests, requests.on_signal = requests, stage.faults.on_signal

        loggers: list = []

        def open_run() -> tuple[str, dict | None, dict]:
            check_output_dir(cfg.output_dir)
            check_run_name(cfg)
            ckpt, changes, continued = None, {}, None
            if resume:  # the resumed run goes on in its own folder, with the changes applied and recorded
                ckpt = load_checkpoint(resume)
                changes = check_resume_compatible(cfg, resume, ckpt)
                continued = resumed_run_dir(resume)
            loggers.extend(run_loggers(cfg, continued))
            run_dir = Path(loggers[0].log_dir).resolve()
            loggers[0].experiment  # the CSV writer starts before the folder has other files in it
            held.enter_context(folder_lock(run_dir))  # one writer per run folder (a second resume is refused)
            if resume:
                record_resume(run_dir / "resumes.json", resume, file_sha256(resume), ckpt.get("epoch", 0), changes)
            save_config(cfg, run_dir / "config.yaml")
            return str(run_dir), ckpt, changes

        run_dir, ckpt, changes = _on_rank0(open_run, layout, stage.faults)
        if ckpt is not None:
            stage.load(ckpt)
            apply_optimizer_changes(stage.optimizers, stage.schedulers, changes, cfg)
        try:
            result = _run(cfg, ctx, layout, stage, Path(run_dir), loggers, enable_progress_bar)
        except BaseException:
            if layout.rank == 0 and not resume:  # a run that failed before it saved anything leaves no folder
                remove_if_empty(Path(run_dir))
            raise
        if after is not None:
            after(stage)
        return result
    finally:
        held.close()
        if ctx.launched:  # the process ends next: torchrun's SIGTERM to the survivors must not cut its message
            requests.ignore()
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(cfg: Config, ctx: DistContext, layout: Layout, stage: PipelineStage, run_dir: Path, loggers: list,
         enable_progress_bar: bool) -> StageResult:
    from tqdm.auto import tqdm

    t, prog = cfg.train, stage.progress
    ckpt_dir = run_dir / "checkpoints"
    prog.best_path = checkpoint_in(prog.best_path, ckpt_dir, _old_checkpoint_folder(prog.best_path))
    n_train = len(replica_shard(train_batches(stage.data.dataset("train"), cfg, 0), layout))
    if n_train == 0:
        raise ConfigError(f"train.pipeline.replicas: {layout.replicas} replicas per stage need at least as many "
                          f"training batches per epoch, got {len(train_batches(stage.data.dataset('train'), cfg, 0))}")
    start = time.perf_counter()
    while not training_done(t, prog.epoch, prog.step):
        epoch = prog.epoch
        bar = None
        if enable_progress_bar and layout.rank == 0:
            bar = tqdm(total=n_train, initial=prog.batch, desc=f"Epoch {epoch} (stage 0 of {layout.stages})",
                       leave=True, dynamic_ncols=True)
        losses: list = []
        stage.train_epoch(epoch, losses, bar)
        if bar is not None:
            bar.close()
        epoch_done = prog.batch >= n_train
        stopping = stage.stop_at is not None and prog.step >= stage.stop_at  # Ctrl-C / SIGTERM
        for s in stage.schedulers if epoch_done else []:
            s.step()
        val_due = not stopping and validation_due(t, epoch, epoch_done, prog.step)
        summaries, val_loss = stage.validate() if val_due else ({}, (0.0, 0))
        if epoch_done:
            prog.epoch, prog.batch = epoch + 1, 0
        part = stage.state() if layout.replica == 0 else None
        if part is not None:  # each stage's own part, atomically
            save_checkpoint({**part, "hyper_parameters": {"config": cfg.to_dict()}},
                            ckpt_dir / "stages" / f"stage{layout.stage}.ckpt")
        payload = {"losses": losses, "val": summaries, "val_loss": val_loss, "part": part, "rank": layout.rank}
        payloads: list | None = [None] * layout.world_size if layout.rank == 0 else None
        stage.faults.collective(f"gathering epoch {epoch}'s results on rank 0",
                                lambda: dist.gather_object(payload, payloads, dst=0))

        def finish_epoch() -> dict:
            metrics = _log_epoch(loggers, cfg, layout, payloads, epoch, prog.step)
            for k, v in metrics.items():
                if not math.isfinite(v):
                    raise NonFiniteError(f"validation metric {k!r}", v, prog.step, None)
            parts = [p["part"] for p in payloads if p["part"] is not None]
            score = metrics.get("val/psnr")
            improved = score is not None and (prog.best_score is None or score > prog.best_score)
            old_best = prog.best_path
            if improved:
                prog.best_score, prog.best_path = score, str(ckpt_dir / f"best-epoch{epoch}.ckpt")
            ckpt = merged_checkpoint(cfg, parts, prog, epoch)
            if improved:
                save_checkpoint(ckpt, prog.best_path)
                if old_best and old_best != prog.best_path:
                    Path(old_best).unlink(missing_ok=True)
            save_checkpoint(ckpt, ckpt_dir / "last.ckpt")
            return {"best_score": prog.best_score, "best_path": prog.best_path}

        best = _on_rank0(finish_epoch, layout, stage.faults)
        prog.best_score, prog.best_path = best["best_score"], best["best_path"]
        if stopping:  # every stage has trained up to the same step; rank 0 wrote last.ckpt of it
            raise TrainingInterrupted(stage.stop_signal, str(ckpt_dir / "last.ckpt"), prog.step, quiet=layout.rank != 0)
        if not epoch_done:  # stopped by max_steps inside the epoch
            break
    seconds = time.perf_counter() - start
    last = ckpt_dir / "last.ckpt"
    return StageResult(run_dir, prog.best_path, str(last), seconds, prog.best_score, stage.step_seconds,
                       prog.step, layout.stage, layout.rank, _peak_memory_mib(ctx.device))
