"""`mrirecon cmrxrecon split`: link the patients of a CMRxRecon TrainingSet into train/val/test folders
(mrirecon/data/readers/cmrxrecon.py); nothing is copied."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.readers.cmrxrecon import split_training_set
from ..data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mrirecon cmrxrecon",
                                description="CMRxRecon cine data: split a TrainingSet into train/val/test folders "
                                            "of symbolic links (nothing is copied).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="link patients of a TrainingSet into OUT/{train,val,test}")
    s.add_argument("--training-set", required=True, type=Path, metavar="DIR",
                   help="MultiCoil/Cine/TrainingSet (or a folder above it)")
    s.add_argument("--out", required=True, type=Path, metavar="DIR")
    s.add_argument("--val", type=float, default=0.15, help="fraction of patients for validation (default 0.15)")
    s.add_argument("--test", type=float, default=0.15, help="fraction of patients for test (default 0.15)")
    args = p.parse_args(argv)
    try:
        splits = split_training_set(args.training_set, args.out, (args.val, args.test))
    except DataError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    for split, names in splits.items():
        print(f"{split:>5}: {len(names)} patients ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    return 0
