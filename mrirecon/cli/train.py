"""Train an unrolled reconstruction network.

    mrirecon train --config configs/knee2d.yaml [key.sub=value ...] [--resume CKPT]
    torchrun --nproc_per_node K train.py --config configs/knee2d.yaml train.strategy=gleam_pipeline ...

(`python train.py ...` is the same command.)

Options and overrides may come in any order. Exit status: 0 done, 2 bad config, data or checkpoint
(the message names the key or file), 3 training diverged (a NaN/Inf loss, gradient or score; the
message names the step and module), 4 a pipeline stage failed or stopped answering (the message names it).

Overrides use the config's dotted keys, e.g. `train.max_epochs=2 model.prox.channels=16`.
The fully resolved config is saved in the run directory next to the logs and checkpoints.
"""
from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load_config
from ..data.errors import DataError
from . import load_registries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mrirecon train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML experiment file (see configs/)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from (e.g. RUN/checkpoints/last.ckpt)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("overrides", nargs="*", help="dotted overrides key.sub=value")
    a = p.parse_intermixed_args(argv)  # overrides before, between or after the options
    load_registries()
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from ..atomic import FolderBusyError
    from ..training.guards import NonFiniteError
    from ..training.interrupts import TrainingInterrupted
    from ..distributed.pipeline import PipelineError, train_pipeline
    from ..training.run import train

    try:
        cfg = load_config(a.config, a.overrides)
        # gleam_pipeline: this process is one stage of the pipeline torchrun started (or the only one).
        run = train_pipeline if cfg.train.strategy == "gleam_pipeline" else train
        result = run(cfg, resume=a.resume, enable_progress_bar=not a.no_progress)
    except TrainingInterrupted as e:  # Ctrl-C / SIGTERM: last.ckpt holds the last completed step
        if str(e):  # several processes: one of them says it
            print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except NonFiniteError as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 3
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    except (ConfigError, DataError, ValueError, OSError, MisconfigurationException, FolderBusyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if getattr(result, "rank", rank_zero_only.rank) != 0:  # several processes (DDP, pipeline): rank 0 reports
        return 0
    print(f"run directory:   {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    print(f"training time:   {result.train_seconds:.1f} s")
    return 0

