"""What a strategy is, and the registry that names them: a strategy is one file (a Strategy subclass) and one
`register_strategy` call; the config check, the LightningModule, the step counting of `train.max_steps` and
the settings fixed on resume all read the registry entry, so a strategy registered outside this package
trains, checkpoints, resumes and evaluates like the built-in ones.

Plain PyTorch: `step` zeroes the gradients, runs forward and backward and steps the optimizers, so a
LightningModule with manual optimisation can call it (passing `self.manual_backward` as `backward`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ...config import Config, ConfigError, register_section_check
from ...models.unrolled import UnrolledNet
from ...options import check_options
from ..optim import adam_per_group

LossFn = Callable[[Tensor, Tensor], Tensor]
Backward = Callable[[Tensor], Any]


def _plain_backward(loss: Tensor) -> None:
    loss.backward()


def unique_parameters(params: Any) -> list[nn.Parameter]:
    """Trainable parameters in first-seen order, each once (shared weights appear once)."""
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        if p.requires_grad:
            seen.setdefault(id(p), p)
    return list(seen.values())


class Strategy:
    """How a training step is computed. Build with :func:`build_strategy`; settings are checked there."""

    name = ""

    def __init__(self, net: UnrolledNet):
        if not isinstance(net, UnrolledNet):
            raise TypeError(f"strategy {self.name!r} trains an UnrolledNet, got {type(net).__name__}")

    def param_groups(self, net: UnrolledNet) -> list[list[nn.Parameter]]:
        """Parameters per optimizer (one optimizer per group)."""
        return [unique_parameters(net.parameters())]

    def exits(self, net: UnrolledNet) -> list[int]:
        """Unroll counts after which an output is trained (anytime reconstruction for gleam)."""
        return [net.num_unrolls]

    def step(self, net: UnrolledNet, kspace: Tensor, maps: Tensor, mask: Tensor, target: Tensor,
             loss_fn: LossFn, optimizers: Sequence[torch.optim.Optimizer],
             backward: Backward = _plain_backward) -> dict[str, float]:
        """One training step on a batch; returns the losses (floats)."""
        self._check_optimizers(net, optimizers)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        out = self._forward_backward(net, kspace, maps, mask, target, loss_fn, backward)
        for opt in optimizers:
            opt.step()
        return out

    def _forward_backward(self, net, kspace, maps, mask, target, loss_fn, backward) -> dict[str, float]:
        raise NotImplementedError

    def _check_optimizers(self, net: UnrolledNet, optimizers: Sequence[Any]) -> None:
        expected = len(self.param_groups(net))
        if len(optimizers) != expected:
            raise ValueError(f"strategy {self.name!r} needs {expected} optimizer(s) (one per parameter group), "
                             f"got {len(optimizers)}")


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy and what the rest of the framework needs to know about it.

    cls:          the Strategy subclass (built by `build_strategy` with the network and its options)
    options:      the field of `train` holding its options (e.g. "invertible" for train.invertible), or None
    modules:      it splits the network into GLEAM modules (train.num_modules: default one unroll per module,
                  must divide model.num_unrolls); otherwise train.num_modules is 1
    trains_as:    the strategy a single process trains with (gleam_pipeline: gleam), default its own name
    distributed:  each process trains one pipeline stage (distributed/pipeline.py, under a launcher) on
                  training/run.py's Trainer; otherwise one process (or Lightning DDP) trains the whole network
    fixed_on_resume: config keys of its own that a resumed run cannot change (besides the architecture)
    """

    name: str
    cls: type[Strategy]
    options: str | None = None
    modules: bool = False
    trains_as: str | None = None
    distributed: bool = False
    fixed_on_resume: tuple[str, ...] = ()


_REGISTRY: dict[str, StrategyEntry] = {}


def register_strategy(name: str, cls: type[Strategy], *, options: str | None = None, modules: bool = False,
                      trains_as: str | None = None, distributed: bool = False,
                      fixed_on_resume: tuple[str, ...] = ()) -> StrategyEntry:
    """Register `cls` as `train.strategy: name` (see StrategyEntry); registering a name again replaces it."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"register_strategy({name!r}): {cls!r} is not a Strategy subclass")
    entry = StrategyEntry(name, cls, options, modules, trains_as, distributed, tuple(fixed_on_resume))
    _REGISTRY[name] = entry
    return entry


def registered_strategies() -> dict[str, StrategyEntry]:
    return dict(_REGISTRY)


def get_strategy(name: str) -> StrategyEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_strategy(name: str, net: UnrolledNet, **cfg: Any) -> Strategy:
    """Build a strategy by name; unknown names, unknown options and impossible settings raise ValueError."""
    entry = get_strategy(name)
    if entry.trains_as is not None:
        entry = get_strategy(entry.trains_as)
    return entry.cls(net, **check_options(entry.cls, cfg, f"strategy {name!r}", skip=("net",)))


def strategy_options(cfg: Config) -> dict[str, Any]:
    """The options `build_strategy` gets for the configured strategy (its options section, its modules)."""
    t = cfg.train
    entry = get_strategy(t.strategy)
    options = dict(getattr(t, entry.options) or {}) if entry.options else {}
    if entry.modules:
        options["num_modules"] = t.num_modules
    return options


def build_configured_strategy(cfg: Config, net: UnrolledNet) -> Strategy:
    """The strategy of `cfg` (train.strategy and its options) for `net`."""
    return build_strategy(cfg.train.strategy, net, **strategy_options(cfg))


def default_optimizers(strategy: Strategy, net: UnrolledNet, lr: float = 1e-4,
                       weight_decay: float = 1e-4) -> list[torch.optim.Optimizer]:
    """One Adam per parameter group (GLEAM's settings: lr 1e-4, weight decay 1e-4)."""
    return adam_per_group(strategy.param_groups(net), lr, weight_decay)


def _check_strategy_section(cfg: Config) -> None:
    """train.strategy names a registered strategy; train.num_modules fits it (GLEAM's default: one unroll per
    module)."""
    t = cfg.train
    if t.strategy not in _REGISTRY:
        raise ConfigError(f"train.strategy: {t.strategy!r} is not one of {sorted(_REGISTRY)}")
    if get_strategy(t.strategy).modules:
        if t.num_modules is None:
            t.num_modules = cfg.model.num_unrolls
        if cfg.model.num_unrolls % t.num_modules:
            raise ConfigError(f"train.num_modules: {t.num_modules} does not divide "
                              f"model.num_unrolls={cfg.model.num_unrolls}")
    else:
        if t.num_modules not in (None, 1):
            raise ConfigError(f"train.num_modules: only strategies that split the network into modules (gleam) take "
                              f"it (train.strategy={t.strategy!r}, num_modules={t.num_modules})")
        t.num_modules = 1


register_section_check("train.strategy", _check_strategy_section)
