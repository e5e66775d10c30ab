"""`mrirecon convex fit` / `mrirecon convex interpret`: fit a convex dual denoiser standalone by its solver
(mrirecon/models/convex/fit.py), and draw the regularisation path and effective filters of a fitted one
(mrirecon/models/convex/interpret.py)."""
from __future__ import annotations

import argparse
import math
import sys

from . import load_registries


def _fit(args: argparse.Namespace) -> int:
    from ..models.convex.fit import fit, read_fit_config

    cfg, settings = read_fit_config(args.config, args.overrides)
    info = fit(cfg, settings, args.out, progress=not args.no_progress)
    print(f"wrote {args.out}: {info['hidden']} hidden units from {info['patterns']} patterns, objective "
          f"{info['objective']:.6g}, optimality {info['optimality']:.2e}, violation {info['violation']:.2e}, "
          f"converged {info['converged']}, {info['solve_seconds']} s")
    return 0


def _interpret(args: argparse.Namespace) -> int:
    from ..models.convex.fit import read_fit_config
    from ..models.convex.interpret import write_interpretation

    cfg, settings = read_fit_config(args.config, args.overrides)
    result = write_interpretation(cfg, settings, args.weights, args.out, args.patches)
    rows = result["rows"]
    print(f"wrote {', '.join(map(str, result['paths']))} (lam_max {result['lam_max']:.3g}; "
          f"active patterns {[r['active_patterns'] for r in rows]})")
    return 0 if all(math.isfinite(r["objective"]) for r in rows) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mrirecon convex", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a convex dual denoiser on denoising pairs from the training split",
                       description="The config is an experiment config (its `data` section picks the data) plus a "
                                   "`fit:` section read only here (defaults: mrirecon.models.convex.fit.FitSettings).")
    f.add_argument("--config", required=True, help="experiment YAML with a fit: section (configs/convex/*_fit.yaml)")
    f.add_argument("--out", required=True, help="weights file to write (atomically)")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("overrides", nargs="*", help="dotted overrides, e.g. fit.lam=1e-3 data.root=DIR")
    f.set_defaults(run=_fit)
    i = sub.add_parser("interpret", help="regularisation path and effective-filter figures of a fitted prox")
    i.add_argument("--config", required=True, help="the fit config (configs/convex/*_fit.yaml)")
    i.add_argument("--weights", required=True, help="weights written by `mrirecon convex fit`")
    i.add_argument("--out", required=True, help="folder for path.png, filters.png and path.json")
    i.add_argument("--patches", type=int, default=400, help="patches for the regularisation path")
    i.add_argument("overrides", nargs="*", help="dotted overrides, as for fit")
    i.set_defaults(run=_interpret)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..config import ConfigError
    from ..data.errors import DataError

    args = parser().parse_args(argv)
    load_registries()
    try:
        return args.run(args)
    except (ConfigError, DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
