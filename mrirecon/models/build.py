"""Build the unrolled network an experiment config describes (no Lightning needed)."""
from __future__ import annotations

from typing import Iterable

from ..config import Config
from ..data.datasets import geometry
from .unrolled import UnrolledNet


def build_network(cfg: Config, owned: Iterable[int] | None = None) -> UnrolledNet:
    """The network of `cfg.model`, with FFT and convolution dims from the data kind (`cfg.data`).
    `owned`: build only these unrolls (a pipeline stage's); see `UnrolledNet`."""
    geo = geometry(cfg.data.kind, cfg.data.volume)
    m = cfg.model
    return UnrolledNet(num_unrolls=m.num_unrolls, prox=dict(m.prox), dc=m.dc, share_weights=m.share_weights,
                       num_maps=m.num_maps, conv_dims=geo.conv_dims, fft_ndim=geo.fft_ndim,
                       step_size_init=m.step_size_init, lam_init=m.lam_init, cg_iters=m.cg_iters,
                       step_size_max=m.step_size_max, owned=owned)
