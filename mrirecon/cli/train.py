"""Train an unrolled reconstruction network.

    mrirecon train --config configs/knee2d.yaml [key.sub=value ...] [--resume CKPT]
    mrirecon train --resume RUN/checkpoints/last.ckpt [key.sub=value ...]   # the checkpoint's own config
    mrirecon train --config configs/knee2d.yaml train.devices=2              # Lightning DDP, 2 processes
    mrirecon launch --nproc_per_node K train --config configs/knee2d.yaml train.strategy=gleam_pipeline ...

(`python train.py ...` is the same command; `torchrun --nproc_per_node K train.py ...` is `mrirecon launch`
without its one-line failures.)

Options and overrides may come in any order. Exit status: 0 done, 2 bad config, data or checkpoint
(the message names the key or file), 3 training diverged (a NaN/Inf loss, gradient or score; the
message names the step and module), 4 a pipeline stage failed or stopped answering (the message names it),
130 / 143 stopped by Ctrl-C / SIGTERM (the message names last.ckpt, which --resume continues).

Overrides use the config's dotted keys, e.g. `train.max_epochs=2 model.prox.channels=16`.
The fully resolved config is saved in the run directory next to the logs and checkpoints.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import ConfigError, load_config
from ..data.errors import DataError
from . import load_registries


def say(line: str) -> None:
    """The line a run ends with: on stderr, and to `mrirecon launch` when it started this process."""
    from ..distributed.launch import tell_launcher

    print(line, file=sys.stderr)
    tell_launcher(line)


def resume_config(checkpoint: str, overrides: list[str]):
    """The resolved config a checkpoint was trained with (every mrirecon checkpoint carries it), overrides on top."""
    from ..training.checkpoints import load_checkpoint

    return load_config(None, overrides, base=load_checkpoint(checkpoint)["hyper_parameters"]["config"])


def check_launched_world(cfg) -> None:
    """Under a launcher (torchrun, `mrirecon launch`), a single-process strategy runs as Lightning's DDP over
    the launched processes, which needs train.devices (processes per node) and train.num_nodes to say how many;
    otherwise each process would train a copy of the run on its own. train.num_nodes > 1 needs the launcher
    on every node (Lightning starts processes on its own node only)."""
    from ..training.strategies import get_strategy

    t = cfg.train
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if get_strategy(t.strategy).distributed:
        if t.num_nodes != 1:
            raise ConfigError(f"train.num_nodes: {t.num_nodes}, but train.strategy={t.strategy} takes its nodes and "
                              "processes from the launcher (mrirecon launch --nnodes N --nproc_per_node K); leave it 1")
        return
    if world == 1:
        if t.num_nodes != 1:
            raise ConfigError(f"train.num_nodes: {t.num_nodes} needs a launcher on every node: mrirecon launch "
                              f"--nnodes {t.num_nodes} --nproc_per_node {t.devices} --rdzv-backend c10d "
                              "--rdzv-endpoint HOST:PORT train ...")
        return
    if (t.devices, t.num_nodes) != (local, world // local) or world % local:
        raise ConfigError(f"train.devices: {t.devices} and train.num_nodes: {t.num_nodes}, but the launcher started "
                          f"{world} processes, {local} per node (WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local}): set "
                          f"train.devices={local} train.num_nodes={max(1, world // local)} for data-parallel training "
                          "over them, or start one process and let train.devices start the others")


def lost_peer(error: RuntimeError) -> str | None:
    """What a collective's failure says when another process of a data-parallel run has gone (its
    connection closed, or it did not answer in time), else None."""
    import torch.distributed as dist

    from ..distributed.faults import backend_detail

    # the backend's own errors only (Lightning has already torn the process group down when they get here)
    if not (isinstance(error, dist.DistError) or "gloo" in str(error) or "NCCL" in str(error)):
        return None
    detail = backend_detail(error)
    return detail if detail in ("its connection closed", "timed out") else None


def last_checkpoint_written(cfg, resume: str | None) -> str:
    """last.ckpt of the run folder this process (or the process that started it: Lightning's DDP) has locked,
    else the placeholder RUN/checkpoints/last.ckpt."""
    from ..atomic import LOCK_NAME

    runs = [Path(resume).resolve().parent.parent] if resume else sorted((Path(cfg.output_dir) / cfg.name).glob("version_*"))
    holders = (f"pid {os.getpid()} ", f"pid {os.getppid()} ")
    for run in runs:
        lock, last = run / LOCK_NAME, run / "checkpoints" / "last.ckpt"
        if lock.is_file() and lock.read_text(errors="replace").startswith(holders) and last.is_file():
            return str(last)
    return "RUN/checkpoints/last.ckpt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mrirecon train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="YAML experiment file (see configs/); with --resume, default: the config the checkpoint "
                        "was trained with (it carries it), overrides on top")
    p.add_argument("--resume", default=None, help="checkpoint to resume from (e.g. RUN/checkpoints/last.ckpt)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("overrides", nargs="*", help="dotted overrides key.sub=value")
    a = p.parse_intermixed_args(argv)  # overrides before, between or after the options
    if a.config is None and a.resume is None:
        p.error("--config is required (or --resume CKPT alone: the checkpoint's config)")
    load_registries()
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    from ..atomic import FolderBusyError
    from ..training.guards import NonFiniteError
    from ..training.interrupts import TrainingInterrupted
    from ..distributed.pipeline import PipelineError, train_pipeline
    from ..training.run import train
    from ..training.strategies import get_strategy

    try:
        cfg = load_config(a.config, a.overrides) if a.config else resume_config(a.resume, a.overrides)
        check_launched_world(cfg)
        # A distributed strategy (gleam_pipeline): this process is one stage of the pipeline the launcher
        # started (or the only one); both run on training/run.py's Trainer.
        run = train_pipeline if get_strategy(cfg.train.strategy).distributed else train
        result = run(cfg, resume=a.resume, enable_progress_bar=not a.no_progress)
    except TrainingInterrupted as e:  # Ctrl-C / SIGTERM: last.ckpt holds the last completed step
        if str(e) and rank_zero_only.rank == 0:  # several processes (pipeline, DDP): rank 0 says it
            say(f"stopped: {e}")
        return e.exit_code
    except NonFiniteError as e:
        say(f"error: training diverged: {e}")
        return 3
    except PipelineError as e:
        say(f"error: {e}")
        return 4
    except ConfigError as e:
        if rank_zero_only.rank == 0:  # every process reads the same config: rank 0 says it
            say(f"error: {e}")
        return 2
    except (DataError, ValueError, OSError, MisconfigurationException, FolderBusyError) as e:
        say(f"error: {e}")
        return 2
    except RuntimeError as e:  # under DDP, a collective whose peer has gone (killed, stopped); after
        # FolderBusyError, a RuntimeError too
        lost = lost_peer(e)
        if lost is None:
            raise  # a bug: its traceback is the message
        last = last_checkpoint_written(cfg, a.resume)
        say(f"error: data-parallel training, rank {rank_zero_only.rank}: another process of the run has died or "
            f"stopped answering ({lost}); `mrirecon train --resume {last}` goes on from its last epoch")
        return 4
    if getattr(result, "rank", rank_zero_only.rank) != 0:  # several processes (DDP, pipeline): rank 0 reports
        return 0
    print(f"run directory:   {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    print(f"training time:   {result.train_seconds:.1f} s")
    if result.warning:
        print(f"warning: {result.warning}")
    return 0

