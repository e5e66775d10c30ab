"""k-space sampling masks: the mask type, the one registry of mask functions, seeds and checks.

A mask function takes the k-space shape of ONE sample without the batch dim, (C, *S):
    (C, H, W)       2D slice, W = phase encode            -> 1D masks over W (`lines`)
    (C, Ky, Kz)     ky-kz slice of hybrid 3D data          -> 2D Poisson-disc masks over (Ky, Kz) (`poisson`)
    (C, X, Ky, Kz)  whole 3D volume (same ky-kz mask for every X)
    (C, T, H, W)    cine, T frames                         -> a ky mask per frame (`kyt`, `cmrxrecon`)
and returns a `Mask`: a float32 0/1 tensor broadcastable to the k-space with a singleton coil dim,
the effective acceleration and the size of the fully sampled calibration region.

Seeds: one integer seed fixes a mask. Validation and test masks are seeded by `seed_from_name` so each
file sees the same mask in every run, process and on every machine; the 1D masks reproduce fastMRI's
(`fastmri.data.subsample`) masks exactly for the same integer seed. Training draws (`training=True`) of
Poisson-disc masks come from a precomputed bank (`poisson`); every other draw is computed for its seed.

A new mask type is a `MaskFunc` subclass decorated with `register_mask(name)`; `build_mask_func` builds any
registered type from `data.mask`.
"""
from __future__ import annotations

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

from ...config import register_section_check
from ...options import check_options
from ..errors import DataError


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


def check_mask_values(mask: Tensor | np.ndarray, path: str | os.PathLike | None = None,
                      key: str = "mask") -> None:
    """Raise DataError unless every value of `mask` is 0 or 1 (boolean masks pass): a mask weights nothing, it
    keeps or drops a sample, and a value such as 0.5 or 2 would silently scale the acquired data."""
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if m.dtype == torch.bool:
        return
    if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
        bad = m[(m != 0) & (m != 1)] if not m.is_complex() else m.flatten()
        shown = sorted({float(v) if not m.is_complex() else complex(v) for v in bad.flatten()[:5].tolist()}, key=str)
        raise DataError(path, f"mask values must be 0/1 or boolean; found {len(bad.flatten())} other value(s), "
                        f"e.g. {shown}", key=key)


def check_mask(mask: Tensor | np.ndarray, path: str | os.PathLike | None = None) -> None:
    """Raise DataError (a ValueError) if `mask` holds values other than 0/1, samples nothing or misses the
    k-space centre.

    The centre is index n // 2 (where a centred FFT puts DC) of the last dim, and also of the
    second-to-last dim where the mask varies over it (ky-kz masks); every other position of the mask
    (each cine frame, say) must sample it, since calibration and low-resolution content live there.
    """
    m = torch.as_tensor(mask)
    if m.dim() == 0 or m.numel() == 0:
        raise DataError(path, f"mask is empty or a scalar (shape {tuple(m.shape)})", key="mask")
    check_mask_values(m, path)
    if not bool((m != 0).any()):
        raise DataError(path, f"mask samples nothing (all zeros, shape {tuple(m.shape)})", key="mask")
    centre = m[..., m.shape[-1] // 2]
    dims = "last dim"
    if m.dim() >= 2 and m.shape[-2] > 1:
        centre = centre[..., m.shape[-2] // 2]
        dims = "last two dims"
    if not bool((centre != 0).all()):
        raise DataError(path, f"mask does not sample the k-space centre (index n // 2 of the {dims}) "
                              f"everywhere (shape {tuple(m.shape)})", key="mask")


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
    """Class decorator: make a MaskFunc buildable by `build_mask_func({"name": name, ...})`."""

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
    """Build the mask function named by `cfg["name"]` (the old key `type` is read too); the other keys are
    its constructor's settings, e.g. {"name": "random", "center_fractions": [0.08], "accelerations": [4]}."""
    if isinstance(cfg, Mapping) and "type" in cfg and "name" not in cfg:  # configs and checkpoints before Dec 2026
        cfg = {("name" if k == "type" else k): v for k, v in cfg.items()}
    if not isinstance(cfg, Mapping) or "name" not in cfg:
        raise ValueError(f"mask config must be a mapping with a 'name' setting (one of {registered_masks()}), "
                         f"got {cfg!r}")
    options = dict(cfg)
    kind = options.pop("name")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown mask name {kind!r} (setting 'name'); registered: {registered_masks()}")
    return _REGISTRY[kind](**check_options(_REGISTRY[kind], options, f"mask {kind!r}"))


def _check_mask_section(cfg: Any) -> None:
    """A config's `data.mask`: the mask function it names builds (microseconds; nothing is drawn)."""
    build_mask_func(cfg.data.mask)


register_section_check("data.mask", _check_mask_section)


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


def check_accelerations(values: Any, minimum: float = 1.0, strict: bool = False) -> list[float]:
    values = _numbers("accelerations", values)
    bad = [v for v in values if (v <= minimum if strict else v < minimum)]
    if bad:
        raise ValueError(f"accelerations must be {'>' if strict else '>='} {minimum:g}, got {values}")
    return values


def check_pairs(center_fractions: Any, accelerations: Any) -> list[tuple[float, float]]:
    fractions = _numbers("center_fractions", center_fractions)
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"center_fractions must be in (0, 1), got {fractions}")
    accelerations = check_accelerations(accelerations)
    if len(fractions) != len(accelerations):
        raise ValueError(f"center_fractions and accelerations must have the same length (one "
                         f"(center_fraction, acceleration) pair is drawn per mask), got {len(fractions)} "
                         f"and {len(accelerations)}")
    return [(float(f), a) for f, a in zip(fractions, accelerations)]


def centre_lines(width: int, num_low: int) -> np.ndarray:
    """Boolean (width,) with `num_low` contiguous lines around index width // 2 (fastMRI's placement)."""
    lines = np.zeros(width, dtype=bool)
    start = (width - num_low + 1) // 2
    lines[start : start + num_low] = True
    return lines


def acs_width(mask: Tensor) -> int:
    """Side of the fully sampled square centred in k-space (the auto-calibration region).

    For 1D masks (readout fully sampled) it is the number of contiguous centre lines; for masks
    varying over leading dims (cine frames) only locations sampled in every frame count.
    """
    m = mask.reshape(-1, *mask.shape[-2:]).amin(0) > 0
    rows, cols = m.shape
    width = 0
    for k in range(1, (cols if rows == 1 else min(rows, cols)) + 1):
        # centred as in fastMRI's masks: k lines starting at (n - k + 1) // 2, around index n // 2
        r0, c0 = (rows - k + 1) // 2 if rows > 1 else 0, (cols - k + 1) // 2
        if not bool(m[r0 : r0 + (k if rows > 1 else 1), c0 : c0 + k].all()):
            break
        width = k
    return width
