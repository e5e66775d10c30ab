"""Build the unrolled network an experiment config describes (no Lightning needed), and check the config's
`model.prox` section without building it (registered with the config's section checks)."""
from __future__ import annotations

from typing import Iterable

from ..config import Config, ConfigError, register_section_check
from ..data.kinds import geometry
from .registry import check_prox_config, registered_prox
from .unrolled import UnrolledNet


def check_prox_section(cfg: Config) -> None:
    """`model.prox` against the registry: a registered name, options the constructor takes (old names mapped
    to new ones, in place), an image layout the kind supports. Values are the constructor's to refuse, when
    the network is built (`build_network`)."""
    name = cfg.model.prox.get("name")
    if name not in registered_prox():
        raise ConfigError(f"model.prox.name: unknown prox {name!r}; registered: {registered_prox()}")
    try:
        name, options = check_prox_config(cfg.model.prox, geometry(cfg.data.kind, cfg.data.volume).conv_dims)
    except ValueError as e:
        raise ConfigError(f"model.prox: {e}") from None
    cfg.model.prox = {"name": name, **options}


register_section_check("model.prox", check_prox_section)


def build_network(cfg: Config, owned: Iterable[int] | None = None) -> UnrolledNet:
    """The network of `cfg.model`, with FFT and convolution dims from the data kind (`cfg.data`).
    `owned`: build only these unrolls (a pipeline stage's); see `UnrolledNet`. A setting the prox's constructor
    refuses raises ConfigError naming `model`."""
    geo = geometry(cfg.data.kind, cfg.data.volume)
    m = cfg.model
    try:
        return UnrolledNet(num_unrolls=m.num_unrolls, prox=dict(m.prox), dc=m.dc, share_weights=m.share_weights,
                           num_maps=m.num_maps, conv_dims=geo.conv_dims, fft_ndim=geo.fft_ndim,
                           step_size_init=m.step_size_init, lam_init=m.lam_init, cg_iters=m.cg_iters,
                           step_size_max=m.step_size_max, owned=owned)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
