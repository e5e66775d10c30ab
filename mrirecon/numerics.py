"""Process-wide numeric settings for training and evaluation on the CPU.

Subnormal ("denormal") float32 values, which trained weights, Adam's moment estimates and activations
drift into after some epochs, take the x86 CPU's slow path: measured on the brain demo (8-unroll PGD,
ResNet prox, 64 x 64, 8 coils) after 9 epochs, 40 training steps took 72.6 s; with subnormals flushed to
zero 4.9 s (15x), and 5.3 s from a fresh initialisation. Values below 1.2e-38 carry no information for
these networks, so they are flushed (the CUDA kernels flush them too in their fast modes).
"""
from __future__ import annotations

import torch


def flush_denormals() -> bool:
    """Flush subnormal floats to zero on the CPU (SSE3 machines; elsewhere a no-op); True if supported."""
    return torch.set_flush_denormal(True)
