"""`mrirecon maps`: compute ESPIRiT coil maps into the maps cache (mrirecon/data/coil_maps.py)."""
from __future__ import annotations

import argparse
import os
import sys

from ..data import coil_maps
from ..data.errors import DataError
from ..data.kinds import registered_kinds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mrirecon maps", description=coil_maps.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of .h5 files, or a root with train/val/test (read only)")
    p.add_argument("--cache", default=None,
                   help=f"cache folder (default ${coil_maps.CACHE_ENV} or ~/.cache/mrirecon/maps)")
    p.add_argument("--kind", choices=registered_kinds(), default=None, help="layout (detected from the file if omitted)")
    p.add_argument("--calib-width", type=int, default=20, help="side of the central calibration square")
    p.add_argument("--kernel-width", type=int, default=6)
    p.add_argument("--thresh", type=float, default=0.02)
    p.add_argument("--crop", type=float, default=0.95)
    p.add_argument("--num-maps", type=int, default=1, help="ESPIRiT map sets (model.num_maps)")
    p.add_argument("--coarse-grid", type=int, default=None,
                   help="ESPIRiT eigenvectors on this many points per dim, interpolated (0: every pixel; "
                        "default 8 x kernel width)")
    p.add_argument("--store", choices=("coarse", "full"), default="coarse",
                   help="cache entries hold the coarse eigenvectors (~1%% of the maps, expanded when read; "
                        "data.maps_store) or the maps at every pixel")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes of one thread each (CPU); on a GPU the maps are computed in this process")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--overwrite", action="store_true", help="recompute maps already cached")
    a = p.parse_args(argv)
    try:
        coil_maps.cache_maps(a.data, a.kind, a.calib_width, a.kernel_width, a.thresh, a.crop, a.workers, a.overwrite,
                             num_maps=a.num_maps, cache=a.cache, device=a.device, coarse_grid=a.coarse_grid,
                             store=a.store)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
