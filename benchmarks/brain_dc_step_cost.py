"""Training-step cost of the brain2d demo's network with PGD and with MoDL data consistency.

Both networks as the demo builds them (`mrirecon.demo.demo_config`: 8 unrolls, ResNet prox 32 channels, GLEAM
with 2 modules of 4 unrolls, batch 1, Adam), PGD through `model.dc=pgd`; GLEAM steps on the same 20 batches of
the demo's synthetic training split, one thread, subnormals flushed. Blocks of 20 steps alternate between the
two so that a drifting machine load hits both alike. Run from the repository root after the demo has written
its data (`mrirecon demo --kind brain2d`, or `mrirecon synth` + `mrirecon maps`):

    flock /tmp/mrirecon-bench.lock env OMP_NUM_THREADS=1 python benchmarks/brain_dc_step_cost.py [--repeats 3]
        [--json FILE] [key.sub=value ...]

Prints ms per step of each and their ratio (results/brain_transfer/REPORT.md quotes it); --json writes them;
trailing overrides apply to both networks (tests: tiny sizes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mrirecon.atomic import write_text
from mrirecon.data.datamodule import ReconDataModule
from mrirecon.demo import demo_config
from mrirecon.numerics import flush_denormals
from mrirecon.training.module import ReconModule

VARIANTS = {"pgd": ["model.dc=pgd"], "modl": []}  # the demo's brain2d default is MoDL (DEMO_NETWORK)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="blocks of 20 steps per variant")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument("overrides", nargs="*", help="config overrides for both networks, e.g. data.root=...")
    args = ap.parse_args(argv)
    flush_denormals()
    torch.set_num_threads(1)
    built = {}
    for name, overrides in VARIANTS.items():
        torch.manual_seed(0)
        cfg = demo_config("brain2d", Path("outputs/step_cost"), [*overrides, *args.overrides], "synth")
        module = ReconModule(cfg.to_dict())
        opts = module.configure_optimizers()
        built[name] = (module, opts[0] if isinstance(opts, tuple) else opts)
    data = ReconDataModule(cfg)
    data.setup("fit")
    loader = iter(data.train_dataloader())
    batches = [data.batch_transform(b) for b, _ in zip(loader, range(20))]

    def steps(name: str, n: int) -> float:
        module, opts = built[name]
        t = time.perf_counter()
        for b in batches[:n]:
            module.strategy.step(module.net, b.kspace, b.maps, b.mask, b.target, module.loss_fn, opts)
        return time.perf_counter() - t

    for name in built:
        steps(name, 3)  # warm-up
    total = dict.fromkeys(built, 0.0)
    for _ in range(args.repeats):
        for name in built:
            total[name] += steps(name, len(batches))
    n = args.repeats * len(batches)
    result = {"steps": n, "ms_per_step": {k: 1000 * t / n for k, t in total.items()},
              "modl_over_pgd": total["modl"] / total["pgd"], "dc": {k: m.cfg.model.dc for k, (m, _) in built.items()}}
    for name, ms in result["ms_per_step"].items():
        print(f"{name}: {ms:.1f} ms/step ({1000 / ms:.2f} steps/s)")
    print(f"modl / pgd: {result['modl_over_pgd']:.2f}")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
