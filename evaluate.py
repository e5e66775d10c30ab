"""Evaluate a trained network or a classical baseline: `mrirecon evaluate` (mrirecon/cli/evaluate.py), kept as
a script for `python evaluate.py ...`:

    python evaluate.py --checkpoint CKPT --data DIR --out OUT
    python evaluate.py --method {zero_filled,sense,cs} --config configs/knee2d.yaml --data DIR --out OUT
"""
import sys

from mrirecon.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
