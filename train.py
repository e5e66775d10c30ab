"""Train an unrolled reconstruction network: `mrirecon train` (mrirecon/cli/train.py), kept as a script for
`python train.py ...` and for torchrun, which launches a file:

    python train.py --config configs/knee2d.yaml [key.sub=value ...] [--resume CKPT]
    torchrun --nproc_per_node K train.py --config configs/knee2d.yaml train.strategy=gleam_pipeline ...
"""
import sys

from mrirecon.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
