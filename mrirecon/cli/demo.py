"""`mrirecon demo`: the main job end to end on built-in synthetic data (mrirecon/demo.py; `make demo` runs it)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from ..data.errors import DataError
from ..synthetic.generator import KINDS
from . import load_registries


def main(argv: list[str] | None = None) -> int:
    from .. import demo

    p = argparse.ArgumentParser(prog="mrirecon demo", description=demo.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="knee2d", choices=KINDS)
    p.add_argument("--out", default="outputs/demo", help="folder for runs, predictions, figures and the report")
    p.add_argument("--volumes", type=int, default=demo.DEMO_VOLUMES, help="synthetic volumes to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--anatomy", choices=("model", "synth"), default=None,
                   help="brain2d: where the training brains come from (default synth: drawn from the MNI152 template "
                        "under random deformations and contrasts; model: the built-in phantoms)")
    p.add_argument("--synth-off", action="append", choices=("deformation", "contrast"), default=[],
                   help="switch off one randomisation of --anatomy synth (the ablation; repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_epochs=5")
    a = p.parse_args(argv)
    from ..training.interrupts import TrainingInterrupted

    load_registries()
    try:
        demo.run(a.kind, Path(a.out), a.overrides, a.volumes, a.seed, progress=not a.no_progress,
                 anatomy=a.anatomy, synth_off=tuple(a.synth_off))
    except TrainingInterrupted as e:  # Ctrl-C / SIGTERM during training: one line, as `mrirecon train`
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except (ConfigError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
