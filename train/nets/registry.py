"""The model registry: `@register("name")` on a builder, `create_model(name, input_shape, classes, **kw)`."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from edgecv.errors import ConfigError, unknown

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str, *aliases: str):
    def deco(fn):
        for n in (name, *aliases):
            if n in _REGISTRY:
                raise RuntimeError(f"model {n!r} registered twice")
            _REGISTRY[n] = fn
        fn.model_name = name
        return fn
    return deco


def _load_all() -> None:
    # Importing the modules runs their @register decorators.
    from . import cnn, crnn, googlenet, olafenwa, resnet  # noqa: F401


def list_models() -> list[str]:
    _load_all()
    return sorted({fn.model_name for fn in _REGISTRY.values()})


def get_builder(name: str) -> Callable[..., Any]:
    _load_all()
    key = name.lower().replace("_", "").replace("-", "")
    table = {k.replace("_", "").replace("-", ""): v for k, v in _REGISTRY.items()}
    if key not in table:
        raise ConfigError(unknown("model", name, list_models()))
    return table[key]


def create_model(name: str, input_shape: tuple[int, int, int], classes: int, **kw: Any):
    """Build a registered Keras model. Unknown keyword arguments are an error, never ignored."""
    builder = get_builder(name)
    params = inspect.signature(builder).parameters
    bad = [k for k in kw if k not in params]
    if bad:
        allowed = [p for p in params if p not in ("input_shape", "classes")]
        raise ConfigError(f"model {name!r} takes no option(s) {', '.join(bad)}; it takes: {', '.join(allowed) or 'none'}")
    return builder(input_shape=tuple(input_shape), classes=int(classes), **kw)
