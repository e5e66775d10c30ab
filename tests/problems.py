"""Random reconstruction problems for tests: y = A x with coil maps of unit sum of squares (so
||A^H A|| <= 1) and a random 0/1 mask, drawn from one seeded generator (maps, then mask, then x)."""
import torch

from mrirecon.physics import SenseOp
from mrirecon.training.losses import l1_loss

# layout -> (image spatial shape, conv_dims, fft_ndim)
LAYOUTS = {"2d": ((16, 16), 2, 2), "3d": ((12, 12, 8), 3, 3), "cine": ((4, 12, 12), 3, 2)}


def sense_problem(layout: str = "2d", coils: int = 4, maps: int = 1, batch: int = 1, seed: int = 0,
                  spatial: tuple[int, ...] | None = None):
    """(y, maps, mask, x) for a layout of LAYOUTS (`spatial` overrides its image shape).

    Cine: maps constant over time (broadcast dim of size 1) and a ky-t mask varying over frames."""
    default, _, fft_ndim = LAYOUTS[layout]
    spatial = default if spatial is None else spatial
    g = torch.Generator().manual_seed(seed)
    map_spatial = (1, *spatial[1:]) if layout == "cine" else spatial
    s = torch.randn(batch, maps, coils, *map_spatial, dtype=torch.complex64, generator=g)
    s = s / s.abs().pow(2).sum((1, 2), keepdim=True).sqrt()
    if layout == "cine":
        mask_shape = (batch, 1, spatial[0], 1, spatial[-1])
    else:
        mask_shape = (batch, 1, *([1] * (len(spatial) - 1)), spatial[-1])
    mask = (torch.rand(mask_shape, generator=g) < 0.5).float()
    x = torch.randn(batch, maps, *spatial, dtype=torch.complex64, generator=g)
    return SenseOp(s, mask, fft_ndim)(x), s, mask, x


def l1_magnitude(pred, target):
    """GLEAM's loss, the library's (mrirecon.training.losses.l1_loss): mean |pred - target| of the complex error."""
    return l1_loss(pred, target)
