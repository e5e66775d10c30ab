"""Options of a registered kind (a prox, a mask, a strategy, a baseline), checked against the signature of
the class or function that builds it, before anything is built: the one place that does it."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping


def parameters(factory: Callable[..., Any], skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The keyword parameters of `factory` (a class: its __init__), less `self` and `skip`."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    return {k: p for k, p in inspect.signature(target).parameters.items()
            if k not in ("self", *skip) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_options(factory: Callable[..., Any], options: Mapping[str, Any], who: str, skip: tuple[str, ...] = (),
                  renamed: Mapping[str, str] | None = None, required: bool = True) -> dict[str, Any]:
    """`options` with old names mapped to new ones (`renamed`: old -> new), checked against `factory`'s
    signature: an unknown option (a misspelling), and with `required` a missing one without a default, raise
    ValueError naming `who`. A factory taking **kwargs accepts any option. Returns the mapped options."""
    options = dict(options)
    for old, new in (renamed or {}).items():
        if old in options:
            if new in options:
                raise ValueError(f"{who}: {old!r} is the old name of {new!r}; give only {new!r}")
            options[new] = options.pop(old)
    target = factory.__init__ if inspect.isclass(factory) else factory
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values()):
        return options
    params = parameters(factory, skip)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"{who}: unknown option(s) {unknown}; allowed: {sorted(params)}")
    missing = [k for k, p in params.items() if required and p.default is p.empty and k not in options]
    if missing:
        raise ValueError(f"{who}: missing option(s) {missing}")
    return options
