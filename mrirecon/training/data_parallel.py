"""Data parallelism for strategies that take several backward passes per step (GLEAM) or write their own
backward (MEL): replicas average their gradients right before every optimizer step.

DDP's reducer assumes one backward per forward covering all parameters; GLEAM runs one backward per
module and MEL a hand-written one, so mrirecon averages gradients itself, with one all-reduce of all of
an optimizer's gradients flattened together. `install_child_watch`: how a dead process of Lightning's DDP
is reported (below).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor


def data_parallel_world() -> int:
    """Number of data-parallel processes of the default group (1 when torch.distributed is not running)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def average_gradients(params: Iterable[Tensor], group: Any = None, extra: Tensor | None = None) -> None:
    """Replace each parameter's gradient by its mean over the group's processes (in place); `extra`, a
    scalar such as the loss, is averaged along in the same all-reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    pieces = [g.reshape(-1) for g in grads] + ([extra.reshape(1).to(grads[0].dtype)] if extra is not None and grads else [])
    if not pieces:
        return
    flat = torch.cat(pieces)
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    if extra is not None:
        extra.copy_(flat[-1])


class GradientAveraging:
    """An optimizer whose step() first averages its gradients over the data-parallel processes."""

    def __init__(self, optimizer: Any, group: Any = None):
        self._opt, self._group = optimizer, group

    def step(self, *args, **kwargs):
        average_gradients([p for g in self._opt.param_groups for p in g["params"]], self._group)
        return self._opt.step(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # zero_grad, param_groups, state, ...
        return getattr(self._opt, name)


# Lightning's DDP launcher (pytorch_lightning.strategies.launchers.subprocess_script, pinned 2.6) starts the
# other processes itself and watches them with a thread that SIGKILLs this process 0-5 s after one of them
# dies. That races this process's own report of the failure (one line, exit 4: cli/train.py) and can end
# the run with -9 and no message. `watch_child_processes` replaces that watcher.
CHILD_GRACE_S = 30.0  # how long this process has to report a dead peer and exit by itself


class _ChildWatch(threading.Thread):
    def __init__(self, procs: list[subprocess.Popen], period_s: float = 1.0, grace_s: float = CHILD_GRACE_S):
        super().__init__(daemon=True, name="mrirecon-child-watch")  # ends with this process
        self.procs, self.period_s, self.grace_s = procs, period_s, grace_s

    def run(self) -> None:
        while True:
            time.sleep(self.period_s)
            codes = [p.poll() for p in self.procs]
            if all(c == 0 for c in codes):
                return
            failed = [(rank, p, c) for rank, (p, c) in enumerate(zip(self.procs, codes), start=1) if c]
            if failed:
                break
        for p in self.procs:  # the survivors would hang in their next collective
            if p.poll() is None:
                p.kill()
        time.sleep(self.grace_s)  # this process normally reports the lost peer and exits meanwhile
        rank, p, code = failed[0]
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        sys.stderr.write(f"error: data-parallel training, rank 0: the process of rank {rank} (pid {p.pid}) ended "
                         f"with {how}; resume from the run's checkpoints/last.ckpt\n")
        sys.stderr.flush()
        os._exit(4)


def watch_child_processes(procs: list[subprocess.Popen]) -> None:
    """Watch the processes Lightning's DDP launcher started: when one fails, kill the others at once and give
    this process `CHILD_GRACE_S` to report it and exit (exit 4 and one line, else this watcher ends it so)."""
    _ChildWatch(procs).start()


def install_child_watch() -> None:
    """Make Lightning's DDP launcher use `watch_child_processes` instead of its own watcher (a no-op where the
    launcher has none: other Lightning versions, launchers such as torchrun that start processes themselves)."""
    from pytorch_lightning.strategies.launchers import subprocess_script as launcher

    if hasattr(launcher, "_launch_process_observer"):
        launcher._launch_process_observer = watch_child_processes
