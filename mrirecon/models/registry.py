"""Registry of proximal networks: a prox kind is registered under a name and built from a config dict.

New kinds (scale-equivariant, rotation-equivariant, convex dual denoisers) plug in with
`@register_prox("name")` and are then usable from any config by name, without touching the unrolled
network or the training strategies.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor, nn


class ProxNet(nn.Module):
    """What the unrolled network expects of a prox: real (B, C, *S) -> real (B, C, *S).

    `is_invertible` says whether `inverse` rebuilds the input from the output; the invertible (MEL)
    training strategy accepts only invertible proxes.
    """

    is_invertible: bool = False

    def inverse(self, z: Tensor, iters: int = 100, tol: float = 1e-6) -> tuple[Tensor, float]:
        """Return (x, residual) with prox(x) ~= z and the final relative residual ||prox(x) - z|| / ||z||."""
        raise ValueError(f"prox {type(self).__name__} is not invertible")


P = TypeVar("P", bound=type)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_prox(name: str) -> Callable[[P], P]:
    """Class decorator: register a prox under `name`. Its constructor takes `in_channels`, `conv_dims`
    and the remaining config keys as keyword arguments."""

    def decorator(cls: P) -> P:
        if name in _REGISTRY:
            raise ValueError(f"prox name {name!r} is already registered (by {_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        return cls

    return decorator


def registered_prox() -> list[str]:
    """Names of all registered prox kinds, sorted."""
    return sorted(_REGISTRY)


def build_prox(cfg: dict[str, Any], in_channels: int, conv_dims: int) -> nn.Module:
    """Build the prox named by `cfg["name"]` with the other keys of `cfg` as options."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ValueError(f"prox config must be a dict with a 'name' key (one of {registered_prox()}), got {cfg!r}")
    options = dict(cfg)
    name = options.pop("name")
    if name not in _REGISTRY:
        raise ValueError(f"unknown prox name {name!r}; registered: {registered_prox()}")
    factory = _REGISTRY[name]
    # Name a misspelt option here rather than letting a TypeError surface from deep inside __init__.
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = set(params) - {"self", "in_channels", "conv_dims"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"prox {name!r}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return factory(in_channels=in_channels, conv_dims=conv_dims, **options)


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
