"""Synthetic multi-coil MRI data written in the real on-disk layouts (`mrirecon.data.layouts`), so that
everything runs without a download: anatomy-like phantoms (`phantoms`), loop-coil arrays with a bias field,
noise, and the writers (`generator`, `cmrxrecon`)."""
from .generator import DEFAULTS, GENERATOR_VERSION, KINDS, generate, make_volume, split_counts

__all__ = ["DEFAULTS", "GENERATOR_VERSION", "KINDS", "generate", "make_volume", "split_counts"]
