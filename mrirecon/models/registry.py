"""Registry of proximal networks: a prox kind is registered under a name and built from a config dict.

New kinds (scale-equivariant, rotation-equivariant, convex dual denoisers) plug in with
`@register_prox("name")` and are then usable from any config by name, without touching the unrolled
network or the training strategies.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence, TypeVar

import torch
from torch import Tensor, nn

from ..options import check_options


class ProxNet(nn.Module):
    """The interface between the unrolled network and a prox: everything UnrolledNet and the training
    strategies know about a prox is here, so a new kind plugs in by name without touching them.

    - forward: real (B, C, *S) -> real (B, C, *S) (the complex image as 2M real channels).
    - prepare(): optional; bring state derived from the weights up to date before a forward (the
      certified conv norms of a Lipschitz-bounded resnet). `prepare_all(proxes)` does it for several
      proxes of one class at once, so a class can batch the work (default: each one's `prepare`).
    - is_invertible / inverse(z, iters, tol): for the invertible (MEL) strategy. `invertible_when` says,
      for error messages, which settings make the kind invertible (None: never).
    - supported_conv_dims: the image layouts the kind handles (2: 2D and ky-kz slices; 3: volumes, cine);
      `build_prox` refuses the others by name before constructing anything.
    - equivariance: "scale" or "rotation" for equivariant kinds, whose equivariance errors evaluation
      reports (mrirecon/evaluation/equivariance.py); None otherwise.
    """

    is_invertible: bool = False
    invertible_when: str | None = None
    supported_conv_dims: tuple[int, ...] = (2, 3)
    equivariance: str | None = None

    def prepare(self) -> None:
        """Bring weight-derived state up to date (default: nothing to do)."""

    @classmethod
    def prepare_all(cls, proxes: Sequence["ProxNet"]) -> None:
        """`prepare` several proxes of this class; override to batch the work across them."""
        for prox in proxes:
            prox.prepare()

    def inverse(self, z: Tensor, iters: int = 100, tol: float = 1e-6) -> tuple[Tensor, float]:
        """Return (x, residual) with prox(x) ~= z and the final relative residual ||prox(x) - z|| / ||z||."""
        raise ValueError(not_invertible_message(self))


def prepare_proxes(proxes: Iterable[nn.Module]) -> None:
    """Prepare distinct proxes (a shared prox once), one `prepare_all` call per class. Proxes that are
    plain nn.Modules without the hook need nothing."""
    by_class: dict[type, list[nn.Module]] = {}
    seen: set[int] = set()
    for prox in proxes:
        if id(prox) not in seen:
            seen.add(id(prox))
            by_class.setdefault(type(prox), []).append(prox)
    for cls, group in by_class.items():
        if hasattr(cls, "prepare_all"):
            cls.prepare_all(group)
        elif hasattr(cls, "prepare"):
            for prox in group:
                prox.prepare()


def prox_name(prox: nn.Module) -> str:
    """The name a prox's class is registered under (its class name if it is not registered)."""
    return _NAMES.get(type(prox), type(prox).__name__)


def not_invertible_message(prox: nn.Module) -> str:
    """Why `prox` cannot be inverted and what could be, for the errors of MEL's checks."""
    name, when = prox_name(prox), getattr(prox, "invertible_when", None)
    if when:
        return f"prox {name!r} is not invertible with these settings: it needs {when}"
    can = [f"{n} ({getattr(c, 'invertible_when')})" for n, c in sorted(_REGISTRY.items())
           if getattr(c, "invertible_when", None)]
    return f"prox {name!r} is not invertible; invertible kinds: {', '.join(can) or 'none registered'}"


P = TypeVar("P", bound=type)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_NAMES: dict[Any, str] = {}  # class -> its registered name
_RENAMED: dict[str, dict[str, str]] = {}  # prox name -> {old option name: new name} (configs and checkpoints)


def register_prox(name: str, renamed: dict[str, str] | None = None) -> Callable[[P], P]:
    """Class decorator: register a prox under `name`. Its constructor takes `in_channels`, `conv_dims`
    and the remaining config keys as keyword arguments. `renamed`: {old option name: new name}, so that
    configs and checkpoints written with the old names still build."""

    def decorator(cls: P) -> P:
        if name in _REGISTRY:
            raise ValueError(f"prox name {name!r} is already registered (by {_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        _RENAMED[name] = dict(renamed or {})
        _NAMES.setdefault(cls, name)
        return cls

    return decorator


def registered_prox() -> list[str]:
    """Names of all registered prox kinds, sorted."""
    return sorted(_REGISTRY)


def build_prox(cfg: dict[str, Any], in_channels: int, conv_dims: int) -> nn.Module:
    """Build the prox named by `cfg["name"]` with the other keys of `cfg` as options.

    Every refusal is a ValueError naming the prox: unknown name or option, an image layout the kind does
    not support, or a setting its constructor rejects."""
    name, options = check_prox_config(cfg, conv_dims)
    return _REGISTRY[name](in_channels=in_channels, conv_dims=conv_dims, **options)


def check_prox_config(cfg: dict[str, Any], conv_dims: int) -> tuple[str, dict[str, Any]]:
    """(name, options) of a prox config, checked without building it: a registered name, known options
    (old names mapped to new ones) and a supported `conv_dims`. Values are the constructor's to check."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ValueError(f"prox config must be a dict with a 'name' key (one of {registered_prox()}), got {cfg!r}")
    options = dict(cfg)
    name = options.pop("name")
    if name not in _REGISTRY:
        raise ValueError(f"unknown prox name {name!r}; registered: {registered_prox()}")
    factory = _REGISTRY[name]
    # Name a misspelt option here rather than letting a TypeError surface from deep inside __init__.
    options = check_options(factory, options, f"prox {name!r}", skip=("in_channels", "conv_dims"),
                            renamed=_RENAMED[name])
    supported = getattr(factory, "supported_conv_dims", (2, 3))
    if conv_dims in (2, 3) and conv_dims not in supported:
        layouts = {2: "2D images and ky-kz slices", 3: "3D volumes and cine"}
        raise ValueError(f"prox {name!r} supports conv_dims {list(supported)} "
                         f"({'; '.join(layouts[d] for d in supported)}), not conv_dims={conv_dims} "
                         f"({layouts[conv_dims]})")
    return name, options


def conv_class(conv_dims: int) -> type[nn.Module]:
    """nn.Conv2d for conv_dims 2 (slices), nn.Conv3d for 3 (volumes, 2D+t cine)."""
    if conv_dims == 2:
        return nn.Conv2d
    if conv_dims == 3:
        return nn.Conv3d
    raise ValueError(f"conv_dims must be 2 or 3, got {conv_dims!r}")


def check_input(x: Tensor, conv_dims: int, who: str) -> None:
    if x.dim() != conv_dims + 2 or torch.is_complex(x):
        kind = "complex " if torch.is_complex(x) else ""
        raise ValueError(f"{who}: expected a real (B, C, *S) tensor with {conv_dims} spatial dims "
                         f"(conv_dims={conv_dims}), got {kind}shape {tuple(x.shape)}")
