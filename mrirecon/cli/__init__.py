"""The `mrirecon` command: one subcommand per module of this package.

    mrirecon train --config configs/knee2d.yaml [key.sub=value ...]
    mrirecon launch --nproc_per_node 2 train --config configs/knee2d.yaml train.strategy=gleam_pipeline
    mrirecon evaluate --checkpoint CKPT --data DIR --out OUT
    mrirecon demo [--kind knee2d]
    mrirecon synth --kind knee2d --out data/synthetic/knee2d
    mrirecon maps --data DIR
    mrirecon cmrxrecon split --training-set DIR --out DIR
    mrirecon convex fit --config configs/convex/knee2d_fit.yaml --out FILE
    mrirecon convex interpret --config ... --weights FILE --out DIR

`mrirecon COMMAND --help` describes each. Library modules hold no command-line code: each command parses
its arguments here and calls the library.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

# command -> (module in this package, one line for the overview). Modules are imported only when their
# command runs, so `mrirecon --help` and `mrirecon synth` do not pay for Lightning.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train an unrolled network from a YAML config"),
    "launch": ("launch", "torchrun's launcher for `train` on several processes (pipeline stages, DDP)"),
    "evaluate": ("evaluate", "evaluate a checkpoint or a classical baseline with fastMRI's metrics"),
    "demo": ("demo", "the end-to-end demo on synthetic data (what `make demo` runs)"),
    "synth": ("synth", "write a synthetic multi-coil dataset"),
    "maps": ("maps", "compute ESPIRiT coil maps into the maps cache"),
    "cmrxrecon": ("cmrxrecon", "CMRxRecon cine data: `split` a TrainingSet into train/val/test"),
    "convex": ("convex", "convex dual denoisers: `fit` one, `interpret` a fitted one"),
}


def load_registries() -> None:
    """Import the registries whose sections a config's validation checks (prox kinds: model.prox; masks:
    data.mask; data kinds: data.kind, data.volume, data.maps), so that every command that loads a config checks
    them the same way."""
    from .. import models  # noqa: F401
    from ..data import kinds, masks  # noqa: F401


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mrirecon COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`mrirecon COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `mrirecon COMMAND ...`; returns the exit status (0 done, 2 bad usage or input, others per command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"mrirecon {version('mrirecon')}")
        except PackageNotFoundError:  # the clone on the path (a .pth), not an installed distribution
            print("mrirecon (source tree)")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"mrirecon: error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    return module.main(rest)
