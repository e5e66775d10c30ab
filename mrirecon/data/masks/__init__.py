"""k-space sampling masks: one registry (`register_mask`, `build_mask_func`) and the built-in mask types.

    base.py       Mask, MaskFunc, the registry, seeds (`seed_from_name`), `apply_mask`, checks, `acs_width`
    lines.py      fastMRI's 1D masks: random, equispaced, equispaced_fraction
    poisson.py    Poisson-disc ky-kz masks (3D) and their precomputed banks
    kyt.py        cine: a variable-density ky mask per frame
    cmrxrecon.py  cine: the CMRxRecon challenge's equispaced lines and central band

Importing this package registers every built-in type. A mask type of your own: subclass `MaskFunc`, decorate
it with `register_mask("name")`, and `data.mask: {name: name, ...}` builds it.
"""
from .base import (Mask, MaskFunc, acs_width, apply_mask, build_mask_func, check_accelerations, check_mask,
                   check_mask_values, check_pairs, register_mask, registered_masks, seed_from_name)
from .cmrxrecon import CmrxReconMask
from .kyt import KytMask
from .lines import EquispacedFractionMask1D, EquispacedMask1D, RandomMask1D
from .poisson import BankSettings, MaskBank, PoissonMask2D, bank_path, load_bank

__all__ = [
    "Mask", "MaskFunc", "RandomMask1D", "EquispacedMask1D", "EquispacedFractionMask1D", "PoissonMask2D",
    "KytMask", "CmrxReconMask", "register_mask", "registered_masks", "build_mask_func", "seed_from_name",
    "apply_mask", "check_mask", "check_mask_values", "check_accelerations", "check_pairs", "acs_width",
    "BankSettings", "MaskBank", "bank_path", "load_bank",
]
