"""`mrirecon launch`: torchrun (the same options) running an mrirecon command on several processes.

    mrirecon launch --nproc_per_node 2 train --config configs/knee2d.yaml train.strategy=gleam_pipeline
    mrirecon launch --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        --rdzv-id run1 train --config configs/knee2d.yaml train.strategy=gleam_pipeline train.pipeline.replicas=2

`torchrun ... train.py ...` with `torchrun` replaced by `mrirecon launch` and `train.py` by `train` (a
script path such as `train.py` works too). Every option before the command is torchrun's (`torchrun
--help`); what follows the command is the command's own. On one node, torchrun picks a free port itself.

What differs from plain torchrun: a failed or stopped run ends with the one line the processes said (the
stage that failed, or the checkpoint a Ctrl-C / SIGTERM wrote) instead of torchrun's tracebacks and shutdown
warnings, and the exit status is mrirecon's: 2 bad config or data, 3 diverged, 4 a process failed or was
killed, 130 / 143 stopped by Ctrl-C / SIGTERM.

For the single-process strategies (e2e, checkpoint, invertible, gleam) `mrirecon train ... train.devices=2`
starts the processes itself (Lightning's DDP); under `mrirecon launch` (one node) they run as DDP over the
launched processes when train.devices equals --nproc_per_node (anything else is refused, exit 2).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import COMMANDS

# The commands that run as one process of several (the others work on one process).
DISTRIBUTED = ("train",)


def main(argv: list[str] | None = None) -> int:
    from ..distributed.launch import launch, torchrun_parser

    parser = torchrun_parser()
    parser.prog, parser.description = "mrirecon launch", __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:  # torchrun's positionals, in the words of this command
        if action.dest == "training_script":
            action.metavar, action.help = "COMMAND", f"{', '.join(DISTRIBUTED)} (or a script file, as for torchrun)"
        elif action.dest == "training_script_args":
            action.metavar, action.help = "ARGS", "the command's own options and overrides"
    args = parser.parse_args(argv)
    what = args.training_script
    if not args.module and not args.no_python and not Path(what).is_file():
        if what in DISTRIBUTED:  # an mrirecon command: run `python -m mrirecon COMMAND ...` on each process
            args.training_script_args = [what, *args.training_script_args]
            args.training_script, args.module = "mrirecon", True
        elif what in COMMANDS:
            parser.exit(2, f"mrirecon launch: error: {what!r} runs on one process; launch runs "
                           f"{', '.join(DISTRIBUTED)} (or a script) on several\n")
        else:
            parser.exit(2, f"mrirecon launch: error: {what!r} is neither an mrirecon command "
                           f"({', '.join(DISTRIBUTED)}) nor a script file\n")
    code, line = launch(args)
    if line:
        print(f"{'stopped' if code in (130, 143) else 'error'}: {line}", file=sys.stderr)
    return code
