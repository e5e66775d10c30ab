"""k-space sampling masks: which k-space locations an accelerated scan acquires.

A mask function takes the k-space shape of ONE sample without the batch dim, (C, *S):
    (C, H, W)       2D slice, W = phase encode            -> 1D masks over W
    (C, Ky, Kz)     ky-kz slice of hybrid 3D data          -> 2D Poisson-disc masks over (Ky, Kz)
    (C, X, Ky, Kz)  whole 3D volume (same ky-kz mask for every X)
    (C, T, H, W)    cine, T frames                         -> a different ky mask per frame
and returns a `Mask`: a float32 0/1 tensor broadcastable to the k-space with a singleton coil dim,
the effective acceleration and the size of the fully sampled calibration region.

Seeds: one integer seed fixes a mask. Validation and test masks are seeded by `seed_from_name` so each
file sees the same mask in every run, process and on every machine; the 1D masks reproduce fastMRI's
(`fastmri.data.subsample`) masks exactly for the same integer seed. Training draws (`training=True`) of
Poisson-disc masks come from a precomputed bank (`PoissonMask2D` `bank`, see `mask_bank`); every other
draw is computed for its seed.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import math
import numbers
import os
import re
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = [
    "Mask", "MaskFunc", "RandomMask1D", "EquispacedMask1D", "EquispacedFractionMask1D", "PoissonMask2D",
    "KytMask", "register_mask", "registered_masks", "build_mask_func", "seed_from_name", "apply_mask",
    "check_mask",
]

_SEED_LIMIT = 2**32  # np.random.RandomState and sigpy's Poisson kernel take seeds in [0, 2**32)


class Mask(NamedTuple):
    """A drawn mask.

    mask: float32 0/1, broadcastable to the k-space shape it was drawn for, singleton coil dim.
    acceleration: effective acceleration, (locations in the undersampled dims) / (locations sampled).
    calib_size: extent of the fully sampled centre (auto-calibration region), one entry per
      undersampled k-space dim: (lines,) for 1D and cine masks, (ky, kz) for Poisson-disc masks.
    nominal: the configured acceleration that was drawn (results are grouped by it).
    """

    mask: Tensor
    acceleration: float
    calib_size: tuple[int, ...]
    nominal: float = float("nan")

    @property
    def num_low_frequencies(self) -> int:
        """fastMRI's name: fully sampled centre lines along the last (phase-encode) dim."""
        return self.calib_size[-1]


def seed_from_name(name: str | os.PathLike, *extra: int | str) -> int:
    """Stable 32-bit seed from a file's base name, optionally mixed with ints or strings (a global
    seed, an epoch, a slice index).

    Only the base name counts (both '/' and '\\' separate folders), so moving the data does not change
    the masks. SHA-256 makes it the same in every process and Python run (`hash()` is salted per run)
    and tells anagrams apart (a sum of character codes does not).
    """
    base = re.split(r"[\\/]", os.fspath(name))[-1]
    parts = [base]
    for e in extra:
        if isinstance(e, bool) or not isinstance(e, (numbers.Integral, str)):
            raise TypeError(f"seed_from_name: extra values must be ints or strings, got {e!r}")
        parts.append(str(int(e)) if isinstance(e, numbers.Integral) else e)
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def apply_mask(kspace: Tensor, mask: Tensor) -> Tensor:
    """Undersample: `kspace * mask + 0.0`.

    A negative value times a 0 is -0.0 (IEEE 754), so the bare product keeps the sign of the dropped
    samples, which a network could read; adding 0.0 turns every -0.0 into +0.0 (fastMRI does the same).
    """
    return kspace * mask.to(kspace.device) + 0.0


def check_mask(mask: Tensor | np.ndarray, path: str | os.PathLike | None = None) -> None:
    """Raise DataError (a ValueError) if `mask` samples nothing or misses the k-space centre.

    The centre is index n // 2 (where a centred FFT puts DC) of the last dim, and also of the
    second-to-last dim where the mask varies over it (ky-kz masks); every other position of the mask
    (each cine frame, say) must sample it, since calibration and low-resolution content live there.
    """
    m = torch.as_tensor(mask)
    if m.dim() == 0 or m.numel() == 0:
        raise DataError(path, f"mask is empty or a scalar (shape {tuple(m.shape)})")
    if not bool((m != 0).any()):
        raise DataError(path, f"mask samples nothing (all zeros, shape {tuple(m.shape)})")
    centre = m[..., m.shape[-1] // 2]
    dims = "last dim"
    if m.dim() >= 2 and m.shape[-2] > 1:
        centre = centre[..., m.shape[-2] // 2]
        dims = "last two dims"
    if not bool((centre != 0).all()):
        raise DataError(path, f"mask does not sample the k-space centre (index n // 2 of the {dims}) "
                              f"everywhere (shape {tuple(m.shape)})")


# ---------------------------------------------------------------------------------------------------
# Base class and registry


class MaskFunc:
    """Draws masks for k-space of one sample, shape (C, *S).

    kind: registry name (`build_mask_func` type).
    sampled_dims: the k-space dims (negative, from the end) the mask varies over.
    ndims: accepted lengths of the shape (coil dim included).
    """

    kind: ClassVar[str] = ""
    sampled_dims: ClassVar[tuple[int, ...]] = ()
    ndims: ClassVar[tuple[int, ...]] = ()
    layout: ClassVar[str] = ""  # shape description for error messages

    @property
    def ndim_sampled(self) -> int:
        """Number of undersampled dims."""
        return len(self.sampled_dims)

    def __call__(self, shape: Sequence[int], seed: int | None = None,
                 rng: np.random.Generator | None = None, training: bool = False) -> Mask:
        """Draw a mask for k-space of `shape` (C, *S).

        seed: an integer in [0, 2**32) fixes the mask (e.g. `seed_from_name(fname)`); rng: draw the
        seed from this generator instead; neither: a fresh random mask. training: a training draw, which
        a mask type may serve from precomputed masks (`PoissonMask2D` `bank`); still fixed by the seed.
        """
        shape, seed = self._check_shape(shape), _resolve_seed(seed, rng)
        return self._sample_training(shape, seed) if training else self._sample(shape, seed)

    def _check_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        try:
            shape = tuple(int(n) for n in shape)
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}: shape must be a sequence of ints, got {shape!r}") from None
        if len(shape) not in self.ndims or min(shape) < 1:
            raise ValueError(f"{type(self).__name__} undersamples k-space of shape {self.layout} "
                             f"(one sample, no batch dim), got shape {shape}")
        return shape

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        raise NotImplementedError

    def _sample_training(self, shape: tuple[int, ...], seed: int) -> Mask:
        return self._sample(shape, seed)  # masks that are cheap to draw are drawn for every training sample

    def __repr__(self) -> str:
        params = inspect.signature(type(self).__init__).parameters
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in params if k != "self")
        return f"{type(self).__name__}({args})"


M = TypeVar("M", bound=type)
_REGISTRY: dict[str, type[MaskFunc]] = {}


def register_mask(name: str) -> Callable[[M], M]:
    """Class decorator: make a MaskFunc buildable by `build_mask_func({"type": name, ...})`."""

    def decorator(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"mask type {name!r} is already registered (by {_REGISTRY[name].__name__})")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered_masks() -> list[str]:
    """Names of all registered mask types, sorted."""
    return sorted(_REGISTRY)


def build_mask_func(cfg: Mapping[str, Any]) -> MaskFunc:
    """Build the mask function named by `cfg["type"]`; the other keys are its constructor's settings,
    e.g. {"type": "random", "center_fractions": [0.08], "accelerations": [4]}."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"mask config must be a mapping with a 'type' setting (one of {registered_masks()}), "
                         f"got {cfg!r}")
    options = dict(cfg)
    kind = options.pop("type")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown mask type {kind!r} (setting 'type'); registered: {registered_masks()}")
    cls = _REGISTRY[kind]
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"mask type {kind!r}: unknown setting(s) {unknown}; valid: {sorted(params)}")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"mask type {kind!r}: missing setting(s) {missing}")
    return cls(**options)


def _resolve_seed(seed: int | None, rng: np.random.Generator | None) -> int:
    if seed is not None and rng is not None:
        raise ValueError("give a mask either a seed or an rng, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < _SEED_LIMIT:
            raise ValueError(f"mask seed must be an int in [0, 2**32), got {seed!r}")
        return int(seed)
    if rng is None:
        rng = np.random.default_rng()
    return int(rng.integers(0, _SEED_LIMIT))


# ---------------------------------------------------------------------------------------------------
# Setting checks (messages name the setting)


def _numbers(name: str, values: Any) -> list[float]:
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name} must be a non-empty list of numbers, got {list(values)!r}")
    return list(values)


def _check_accelerations(values: Any, minimum: float = 1.0, strict: bool = False) -> list[float]:
    values = _numbers("accelerations", values)
    bad = [v for v in values if (v <= minimum if strict else v < minimum)]
    if bad:
        raise ValueError(f"accelerations must be {'>' if strict else '>='} {minimum:g}, got {values}")
    return values


def _check_pairs(center_fractions: Any, accelerations: Any) -> list[tuple[float, float]]:
    fractions = _numbers("center_fractions", center_fractions)
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"center_fractions must be in (0, 1), got {fractions}")
    accelerations = _check_accelerations(accelerations)
    if len(fractions) != len(accelerations):
        raise ValueError(f"center_fractions and accelerations must have the same length (one "
                         f"(center_fraction, acceleration) pair is drawn per mask), got {len(fractions)} "
                         f"and {len(accelerations)}")
    return [(float(f), a) for f, a in zip(fractions, accelerations)]


def _centre_lines(width: int, num_low: int) -> np.ndarray:
    """Boolean (width,) with `num_low` contiguous lines around index width // 2 (fastMRI's placement)."""
    lines = np.zeros(width, dtype=bool)
    start = (width - num_low + 1) // 2
    lines[start : start + num_low] = True
    return lines


# ---------------------------------------------------------------------------------------------------
# 1D masks over the phase-encode (last) dim: fastMRI's masks


class _LineMask1D(MaskFunc):
    """fastMRI-style 1D mask: `round(W * center_fraction)` centre lines plus outer lines.

    One (center_fraction, acceleration) pair is drawn uniformly per mask. The random draws are
    fastMRI's, in its order, from np.random.RandomState(seed): the pair index
    (`randint(len(pairs))`), then the outer lines (`_outer_lines`), so a seed gives the same mask as
    `fastmri.data.subsample` with that seed.
    """

    sampled_dims = (-1,)
    ndims = tuple(range(2, 9))
    layout = "(C, ..., W) with W = phase encode"

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float]):
        self.pairs = _check_pairs(center_fractions, accelerations)

    @property
    def center_fractions(self) -> list[float]:
        return [f for f, _ in self.pairs]

    @property
    def accelerations(self) -> list[float]:
        return [a for _, a in self.pairs]

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        width = shape[-1]
        rs = np.random.RandomState(seed)
        center_fraction, acceleration = self.pairs[rs.randint(len(self.pairs))]
        num_low = round(width * center_fraction)  # Python's round: halves go to even, as in fastMRI
        if num_low < 1:
            raise ValueError(f"{type(self).__name__}: center_fractions {center_fraction} keeps no centre "
                             f"line of a phase-encode width of {width}")
        lines = _centre_lines(width, num_low) | self._outer_lines(width, acceleration, num_low, rs)
        mask = torch.from_numpy(lines.astype(np.float32)).reshape(*([1] * (len(shape) - 1)), width)
        return Mask(mask, width / int(lines.sum()), (num_low,), float(acceleration))

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError


@register_mask("random")
class RandomMask1D(_LineMask1D):
    """fastMRI's random mask: besides the centre, each line is kept independently with probability
    (W / R - n_low) / (W - n_low), so W / R lines are sampled on average (the centre lines are drawn
    too but kept anyway; with n_low > W / R only the centre remains)."""

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        if num_low >= width:
            return np.zeros(width, dtype=bool)
        prob = (width / acceleration - num_low) / (width - num_low)
        return rs.uniform(size=width) < prob


@register_mask("equispaced")
class EquispacedMask1D(_LineMask1D):
    """fastMRI's equispaced mask: every R-th line from a random offset in [0, R), plus the centre.

    The centre lines come on top of the W / R spaced lines, so the effective acceleration is below
    the nominal R (GRAPPA-style acquisitions). R must be a whole number.
    """

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float]):
        super().__init__(center_fractions, accelerations)
        if any(float(a) != int(a) for _, a in self.pairs):
            raise ValueError(f"accelerations must be whole numbers for equispaced masks, got {self.accelerations}")
        self.pairs = [(f, int(a)) for f, a in self.pairs]

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        offset = rs.randint(0, high=acceleration)
        lines = np.zeros(width, dtype=bool)
        lines[offset::acceleration] = True
        return lines


@register_mask("equispaced_fraction")
class EquispacedFractionMask1D(_LineMask1D):
    """fastMRI's EquispacedMaskFractionFunc: lines spaced by the non-integer step
    R (W - n_low) / (W - n_low R), so that with the centre about W / R lines are sampled in all.

    Positions are offset + k * step rounded to the nearest integer (halves to even), below W - 1, so
    the spacing is only approximately equal and the last line is never an outer line; fastMRI keeps
    this behaviour to match its public multi-coil test masks. Needs center_fraction * R < 1.
    """

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float]):
        super().__init__(center_fractions, accelerations)
        bad = [(f, a) for f, a in self.pairs if f * a >= 1]
        if bad:
            raise ValueError(f"center_fractions times accelerations must be < 1 for equispaced_fraction masks "
                             f"(the centre alone would exceed W / R lines), got pairs {bad}")

    def _outer_lines(self, width: int, acceleration: float, num_low: int, rs: np.random.RandomState) -> np.ndarray:
        if num_low * acceleration >= width:
            raise ValueError(f"{type(self).__name__}: center_fractions gives {num_low} centre lines, not fewer "
                             f"than W / R = {width / acceleration:g} for W = {width}, R = {acceleration}")
        step = acceleration * (num_low - width) / (num_low * acceleration - width)
        offset = rs.randint(0, high=round(step))
        # np.arange (not offset + k * step) for the same floating-point positions as fastMRI
        positions = np.rint(np.arange(offset, width - 1, step)).astype(np.int64)
        lines = np.zeros(width, dtype=bool)
        lines[positions] = True
        return lines


# ---------------------------------------------------------------------------------------------------
# 2D Poisson-disc masks over (Ky, Kz): 3D data


@register_mask("poisson")
class PoissonMask2D(MaskFunc):
    """Variable-density Poisson-disc ky-kz mask with a fully sampled calibration box (sigpy).

    Used for 3D acquisitions decoupled along the fully sampled readout (GLEAM: 4x to 16x, 20x20
    calibration). Accepts ky-kz slices (C, Ky, Kz) -> mask (1, Ky, Kz) and whole volumes
    (C, X, Ky, Kz) -> (1, 1, Ky, Kz), one mask for every X. One acceleration is drawn per mask.

    The sampling is sigpy.mri.poisson's: Bridson's Poisson-disc with radius growing as 1 + s r
    (r = normalised distance outside the calibration box), corners beyond r = 1 dropped if
    `crop_corner`, the slope s found by bisection until |achieved - target| < `tol`. For a seed where
    sigpy.mri.poisson returns, the mask is identical to it. We run the bisection ourselves, on sigpy's
    kernel, because sigpy's loops forever once the bisection stalls between two adjacent floats
    without meeting `tol` (e.g. 24x20 at 8x, calib 4x4, seed 1; skm-tea issue #9); we then keep the
    closest mask if within `max_rel_error` of the target.

    sigpy's kernel never marks its random start point, so a seed whose start point falls inside the
    calibration box rejects every candidate around it and returns the box alone at every slope (about
    calib area / grid area of all seeds, e.g. 1 in 20 at 64x48 with 12x12; sigpy.mri.poisson spins
    forever on them). For such a seed, and any other that misses the target, the mask is drawn again
    from `_retry_seed(seed, k)`, k = 1 .. `max_reseeds`: still a pure function of the seed (fixed
    masks per file, the same in every process), and unchanged for every seed sigpy itself handles.
    ValueError if none reaches the target.

    Mask bank: a training draw (`training=True`) costs tens of ms at knee3d sizes, for every slice of
    every epoch, so it takes its mask from a bank of `bank` precomputed masks per (ky-kz size,
    acceleration, settings): entry j is the mask of seed j, and the draw's seed picks the acceleration
    and then j, both from np.random.RandomState(seed), so runs stay reproducible and slices and epochs
    still see different masks (out of `bank`). The bank is built once (a few seconds at 64x48, 256
    masks) and kept in `bank_cache` (default $MRIRECON_MASK_CACHE or ~/.cache/mrirecon/masks), see
    `mask_bank`. bank=0 draws every training mask afresh. Validation and test draws never use the
    bank: they keep the exact mask of their file's seed. Only this mask type has a bank: the others
    cost microseconds to draw.
    """

    sampled_dims = (-2, -1)
    ndims = (3, 4)
    layout = "(C, Ky, Kz) or (C, X, Ky, Kz)"

    def __init__(self, accelerations: Sequence[float], calib_size: Sequence[int] | int = (20, 20),
                 crop_corner: bool = True, max_attempts: int = 30, tol: float = 0.1,
                 max_rel_error: float = 0.1, max_reseeds: int = 8, bank: int = 256,
                 bank_cache: str | None = None):
        self.accelerations = _check_accelerations(accelerations, minimum=1.0, strict=True)
        if isinstance(calib_size, numbers.Integral) and not isinstance(calib_size, bool):
            calib_size = (calib_size, calib_size)
        if (isinstance(calib_size, (str, bytes)) or not isinstance(calib_size, Sequence) or len(calib_size) != 2
                or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 2 for c in calib_size)):
            raise ValueError(f"calib_size must be two ints >= 2 (ky, kz; >= 2 so the centre is sampled), "
                             f"got {calib_size!r}")
        self.calib_size = (int(calib_size[0]), int(calib_size[1]))
        if not (isinstance(max_attempts, numbers.Integral) and max_attempts >= 1):
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if not 0 < max_rel_error < 1:
            raise ValueError(f"max_rel_error must be in (0, 1), got {max_rel_error!r}")
        self.crop_corner = bool(crop_corner)
        self.max_attempts = int(max_attempts)
        self.tol = float(tol)
        self.max_rel_error = float(max_rel_error)
        if not (isinstance(max_reseeds, numbers.Integral) and max_reseeds >= 0):
            raise ValueError(f"max_reseeds must be an int >= 0, got {max_reseeds!r}")
        self.max_reseeds = int(max_reseeds)
        if isinstance(bank, bool) or not isinstance(bank, numbers.Integral) or bank < 0:
            raise ValueError(f"bank must be an int >= 0 (masks per setting; 0: draw every training mask afresh), "
                             f"got {bank!r}")
        self.bank = int(bank)
        if bank_cache is not None and not isinstance(bank_cache, (str, os.PathLike)):
            raise ValueError(f"bank_cache must be a folder (a string) or null, got {bank_cache!r}")
        self.bank_cache = bank_cache

    def _draw_acceleration(self, shape: tuple[int, ...], rs: np.random.RandomState) -> float:
        ny, nx = shape[-2:]
        cy, cz = self.calib_size
        acceleration = self.accelerations[rs.randint(len(self.accelerations))]
        if cy >= ny or cz >= nx:
            raise ValueError(f"calib_size {self.calib_size} must be smaller than the ky-kz size {(ny, nx)}")
        if cy * cz * acceleration > ny * nx:
            raise ValueError(f"calib_size {self.calib_size} alone samples more than 1/{acceleration:g} of the "
                             f"{ny}x{nx} ky-kz locations: lower calib_size or accelerations")
        return float(acceleration)

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        ny, nx = shape[-2:]
        acceleration = self._draw_acceleration(shape, np.random.RandomState(seed))
        grid, accel = _poisson_mask(ny, nx, acceleration, self.calib_size, seed, self.crop_corner,
                                    self.max_attempts, self.tol, self.max_rel_error, self.max_reseeds)
        return self._mask(shape, grid, accel, acceleration)

    def _sample_training(self, shape: tuple[int, ...], seed: int) -> Mask:
        if self.bank == 0:
            return self._sample(shape, seed)
        from .mask_bank import load_bank

        rs = np.random.RandomState(seed)
        acceleration = self._draw_acceleration(shape, rs)
        entry = rs.randint(self.bank)  # the next draw of the same generator: independent of the acceleration's
        bank = load_bank(self.bank_settings(shape, acceleration), self.bank_cache)
        return self._mask(shape, bank.masks[entry], float(bank.accelerations[entry]), acceleration)

    def bank_settings(self, shape: Sequence[int], acceleration: float):
        """The `mask_bank.BankSettings` of this mask function's bank for ky-kz `shape[-2:]` at `acceleration`."""
        from .mask_bank import BankSettings

        return BankSettings(int(shape[-2]), int(shape[-1]), float(acceleration), self.calib_size, self.crop_corner,
                            self.max_attempts, self.tol, self.max_rel_error, self.max_reseeds, self.bank)

    def _mask(self, shape: tuple[int, ...], grid: np.ndarray, accel: float, nominal: float) -> Mask:
        ny, nx = shape[-2:]
        mask = torch.from_numpy(grid.astype(np.float32)).reshape(*([1] * (len(shape) - 2)), ny, nx)
        return Mask(mask, accel, self.calib_size, nominal)


@functools.lru_cache(maxsize=512)
def _poisson_mask(ny: int, nx: int, acceleration: float, calib: tuple[int, int], seed: int, crop_corner: bool,
                  max_attempts: int, tol: float, max_rel_error: float, max_reseeds: int) -> tuple[np.ndarray, float]:
    """The (read-only bool grid, acceleration) of one Poisson-disc mask, a pure function of its arguments,
    so it is cached: every ky-kz slice of a validation/test file shares its file's seed and so its mask,
    which is drawn once per process instead of once per slice (~50 ms each at 64x48). Up to 512 masks."""
    for k in range(max_reseeds + 1):
        grid, accel = _poisson_disc(ny, nx, acceleration, calib, _retry_seed(seed, k), crop_corner, max_attempts, tol)
        if abs(accel - acceleration) <= max_rel_error * acceleration:
            grid.setflags(write=False)
            return grid, accel
    raise ValueError(f"PoissonMask2D: could not reach accelerations={acceleration:g} for ky-kz "
                     f"{ny}x{nx}, calib_size {calib} (closest {accel:.3f}, seed {seed} and "
                     f"{max_reseeds} seeds derived from it)")


def _retry_seed(seed: int, k: int) -> int:
    """The k-th seed for drawing a Poisson-disc mask again (k = 0: the seed itself); < 2**32 for numba."""
    if k == 0:
        return seed
    return int(np.random.SeedSequence([seed, k]).generate_state(1, np.uint32)[0])


def _poisson_disc(ny: int, nx: int, accel: float, calib: tuple[int, int], seed: int, crop_corner: bool,
                  max_attempts: int, tol: float, max_steps: int = 200) -> tuple[np.ndarray, float]:
    """sigpy.mri.poisson's slope bisection, bounded; returns (bool (ny, nx) mask, its acceleration)."""
    from sigpy.mri.samp import _poisson  # Bridson Poisson-disc kernel (numba); seeds its own generator

    # distance outside the calibration box per axis, normalised to [0, 1], as sigpy defines it
    dy = np.maximum(np.abs(np.arange(ny)[:, None] - ny / 2) - calib[0] / 2, 0)
    dx = np.maximum(np.abs(np.arange(nx)[None, :] - nx / 2) - calib[1] / 2, 0)
    r = np.sqrt((dx / dx.max()) ** 2 + (dy / dy.max()) ** 2)
    longest = max(nx, ny)
    low, high = 0.0, float(longest)
    best, best_accel = None, math.inf
    for _ in range(max_steps):
        slope = (low + high) / 2
        radius_x = np.clip((1 + r * slope) * nx / longest, 1, None)
        radius_y = np.clip((1 + r * slope) * ny / longest, 1, None)
        grid = _poisson(nx, ny, max_attempts, radius_x, radius_y, calib, seed)
        if crop_corner:
            grid *= r < 1
        achieved = nx * ny / np.sum(grid)
        if abs(achieved - accel) < abs(best_accel - accel):
            best, best_accel = grid, achieved
        if abs(achieved - accel) < tol or slope in (low, high):  # met, or stalled (sigpy would spin)
            break
        if achieved < accel:
            low = slope
        else:
            high = slope
        if not low < high:
            break
    return best > 0, float(best_accel)


# ---------------------------------------------------------------------------------------------------
# Cine: a different variable-density ky mask per frame


@register_mask("kyt")
class KytMask(MaskFunc):
    """Variable-density random ky-t mask for cine k-space (C, T, H, W) -> mask (1, T, 1, W).

    Every frame samples the `round(W * center_fraction)` centre lines (fastMRI's placement) and then
    outer lines drawn without replacement, independently per frame, with probability proportional to
    the Gaussian density exp(-(k / (density_sigma W))^2 / 2) in the line's distance k from the centre
    index W // 2, up to max(round(W / R), n_low) lines per frame: the acceleration of every frame is
    W / that, as close to R as whole lines allow. Sampling different lines in different frames spreads
    the aliasing over time (incoherent in x-f), which kt methods exploit. One (center_fraction,
    acceleration) pair is drawn per mask, from np.random.default_rng(seed).
    """

    sampled_dims = (-3, -1)
    ndims = (4,)
    layout = "(C, T, H, W) with T = frames, W = phase encode (ky)"

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float],
                 density_sigma: float = 0.25):
        self.pairs = _check_pairs(center_fractions, accelerations)
        self.center_fractions = [f for f, _ in self.pairs]
        self.accelerations = [a for _, a in self.pairs]
        if isinstance(density_sigma, bool) or not isinstance(density_sigma, numbers.Real) or not density_sigma > 0:
            raise ValueError(f"density_sigma must be > 0 (Gaussian std as a fraction of W), got {density_sigma!r}")
        self.density_sigma = float(density_sigma)

    def _sample(self, shape: tuple[int, ...], seed: int) -> Mask:
        _, frames, _, width = shape
        rng = np.random.default_rng(seed)
        center_fraction, acceleration = self.pairs[int(rng.integers(len(self.pairs)))]
        num_low = round(width * center_fraction)
        if num_low < 1:
            raise ValueError(f"KytMask: center_fractions {center_fraction} keeps no centre line of a "
                             f"phase-encode width of {width}")
        per_frame = min(max(round(width / acceleration), num_low), width)
        centre = _centre_lines(width, num_low)
        outer = np.flatnonzero(~centre)
        density = np.exp(-0.5 * ((outer - width // 2) / (self.density_sigma * width)) ** 2)
        lines = np.repeat(centre[None], frames, axis=0)
        for t in range(frames):
            picked = rng.choice(outer, size=per_frame - num_low, replace=False, p=density / density.sum())
            lines[t, picked] = True
        mask = torch.from_numpy(lines.astype(np.float32)).reshape(1, frames, 1, width)
        return Mask(mask, frames * width / int(lines.sum()), (num_low,), float(acceleration))


# The CMRxRecon challenge's equispaced ky pattern lives with its reader; importing it registers "cmrxrecon".
from . import cmrxrecon as _cmrxrecon  # noqa: E402,F401  (issue 12)
