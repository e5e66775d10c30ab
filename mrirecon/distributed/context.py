"""The process group of a distributed run, as torchrun describes it, and the pipeline's rank layout.

torchrun (single node: `--nproc_per_node K`; several nodes: its standard rendezvous options,
`--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT`) sets RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `init_process_group("env://")` reads them. Without
torchrun (no RANK in the environment) the run is a world of one process.
"""
from __future__ import annotations

import datetime
import os
import signal
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..config import Config, ConfigError


@dataclass(frozen=True)
class Layout:
    """World = K stages x D replicas; rank r is stage r // D, replica r % D. Stage s owns GLEAM modules
    [s M/K, (s + 1) M/K) (numbered from 0); replica d of stage s receives from replica d of stage s - 1."""

    world_size: int
    stages: int
    replicas: int
    num_modules: int
    rank: int

    @property
    def stage(self) -> int:
        return self.rank // self.replicas

    @property
    def replica(self) -> int:
        return self.rank % self.replicas

    def rank_of(self, stage: int, replica: int | None = None) -> int:
        return stage * self.replicas + (self.replica if replica is None else replica)

    def stage_ranks(self, stage: int) -> list[int]:
        return [self.rank_of(stage, d) for d in range(self.replicas)]

    @property
    def modules(self) -> range:
        """This stage's module indices (0-based)."""
        per = self.num_modules // self.stages
        return range(self.stage * per, (self.stage + 1) * per)

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.stages - 1


def pipeline_layout(cfg: Config, world_size: int, rank: int) -> Layout:
    """Check that the world can run the configured pipeline, before any work; errors name the setting."""
    p, m = cfg.train.pipeline, cfg.train.num_modules
    if world_size % p.replicas:
        raise ConfigError(f"train.pipeline.replicas: {p.replicas} replicas per stage do not divide the world size "
                          f"{world_size} (torchrun --nnodes x --nproc_per_node processes); the world must be "
                          "stages x replicas")
    stages = world_size // p.replicas if p.stages is None else p.stages
    if stages * p.replicas != world_size:
        raise ConfigError(f"train.pipeline.stages: {stages} stages x {p.replicas} replicas = "
                          f"{stages * p.replicas} processes, but torchrun started {world_size}")
    if stages > m:
        raise ConfigError(f"train.pipeline.stages: {stages} stages for {m} GLEAM modules (train.num_modules); "
                          "every stage needs at least one module")
    if m % stages:
        raise ConfigError(f"train.pipeline.stages: {stages} stages do not divide train.num_modules={m} "
                          "(every stage owns the same number of modules)")
    return Layout(world_size, stages, p.replicas, m, rank)


def _threads(requested: int | None, local_world_size: int) -> int:
    """Threads per process: the setting, else OMP_NUM_THREADS, else the cores shared among local processes."""
    if requested is not None:
        return requested
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str
    threads: int
    launched: bool  # started by torchrun (else a world of one, made here)


def init_distributed(cfg: Config) -> DistContext:
    """Join (or, without torchrun, create) the default process group with the backend for the device:
    NCCL on CUDA, gloo on CPU. Every blocking call times out after train.pipeline.timeout_s."""
    p, t = cfg.train.pipeline, cfg.train
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator: {t.accelerator!r} asked for, but no CUDA device is available")
    use_cuda = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"train.accelerator: local rank {local_rank} needs GPU {local_rank}, but this node has "
                              f"{torch.cuda.device_count()} (start at most that many processes per node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = p.backend if p.backend != "auto" else ("nccl" if use_cuda else "gloo")
    if backend == "nccl" and not use_cuda:
        raise ConfigError("train.pipeline.backend: nccl needs CUDA devices; use gloo (or auto) on CPU")
    threads = _threads(p.threads, local_world)
    torch.set_num_threads(threads)
    timeout = datetime.timedelta(seconds=p.timeout_s)
    if not dist.is_initialized():
        if launched:
            dist.init_process_group(backend, timeout=timeout, device_id=device if use_cuda else None)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistContext(rank, world, local_rank, local_world, device, backend, threads, launched)


@dataclass
class Peers:
    """Where every rank's process runs (host, pid), to tell a stage that died or was stopped (SIGSTOP) from one
    that is slow. Only processes on this host can be looked at; others are "unknown"."""

    rank: int
    processes: dict[int, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def exchange(cls, rank: int, world_size: int) -> "Peers":
        """Every rank's (host, pid), gathered on every rank (a collective: call it on all ranks)."""
        mine = (socket.gethostname(), os.getpid())
        every: list = [None] * world_size
        if world_size > 1:
            dist.all_gather_object(every, mine)
        else:
            every = [mine]
        return cls(rank, {r: tuple(p) for r, p in enumerate(every)})

    def state(self, rank: int) -> str:
        """"running", "ended" (exited or killed: gone or a zombie), "stopped" (SIGSTOP) or "unknown"."""
        host, pid = self.processes.get(rank, (None, None))
        if host != socket.gethostname() or pid is None:
            return "unknown"
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return "ended"
        except OSError:
            return "unknown"
        return {"Z": "ended", "X": "ended", "T": "stopped"}.get(state, "running")

    def failed(self) -> dict[int, str]:
        """The other ranks whose process has ended or is stopped: {rank: state}."""
        out = {}
        for r in self.processes:
            if r != self.rank:
                state = self.state(r)
                if state in ("ended", "stopped"):
                    out[r] = state
        return out

    def end(self, rank: int) -> bool:
        """SIGKILL a stopped peer on this host (what torchrun does after --shutdown_timeout): a stopped
        process takes no other signal, and every stage is ending. True when it was sent."""
        host, pid = self.processes.get(rank, (None, None))
        if self.state(rank) != "stopped":
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return False
        return True


def default_store():
    """The key-value store of the default process group (torchrun's rendezvous store), for small flags
    every rank can read without a collective (e.g. a stop request)."""
    return dist.distributed_c10d._get_default_store()  # no public accessor in torch 2.x
