"""Train an unrolled reconstruction network.

    python train.py --config configs/knee2d.yaml [key.sub=value ...] [--resume CKPT]

Overrides use the config's dotted keys, e.g. `train.max_epochs=2 model.prox.channels=16`.
The fully resolved config is saved in the run directory next to the logs and checkpoints.
"""
from __future__ import annotations

import argparse
import sys

from mrirecon.config import ConfigError, load_config
from mrirecon.data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML experiment file (see configs/)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from (e.g. RUN/checkpoints/last.ckpt)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("overrides", nargs="*", help="dotted overrides key.sub=value")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, a.overrides)
        from mrirecon.training.run import train

        result = train(cfg, resume=a.resume, enable_progress_bar=not a.no_progress)
    except (ConfigError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run directory:   {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    print(f"last checkpoint: {result.last_checkpoint}")
    print(f"training time:   {result.train_seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
