"""Models: the unrolled network family and the proximal networks it uses (registered by name)."""
from .registry import ProxNet, build_prox, register_prox, registered_prox
from . import prox  # noqa: F401  (registers the built-in prox kinds)
from . import convex  # noqa: F401  (registers "convex_dual")
from .unrolled import Unroll, UnrolledNet
from .build import build_network  # (also registers the check of a config's model.prox section)

__all__ = ["ProxNet", "Unroll", "UnrolledNet", "build_network", "build_prox", "register_prox", "registered_prox"]
