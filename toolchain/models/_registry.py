"""The model zoo registry: factories registered by decorator, one public door (`create_model`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from toolchain.errors import ToolchainError


@dataclass(frozen=True)
class ModelSpec:
    """A registered zoo entry: its factory and the input it expects (batch of 1)."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    task: str  # "classification" or "dense-prediction"
    description: str


_ZOO: dict[str, ModelSpec] = {}


def register_model(input_shape: tuple[int, ...], task: str = "classification"):
    """Register a factory under its function name.

    >>> @register_model(input_shape=(1, 3, 32, 32))
    ... def tiny(): return nn.Conv2d(3, 4, 3)   # doctest: +SKIP
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _ZOO:
            raise ValueError(f"model {name!r} registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _ZOO[name] = ModelSpec(name, factory, tuple(input_shape), task, doc[0] if doc else "")
        return factory

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _ZOO if fnmatch.fnmatch(n, pattern))


def get_model_spec(name: str) -> ModelSpec:
    if name not in _ZOO:
        raise ToolchainError(f"unknown zoo model {name!r}; valid: {', '.join(list_models())}")
    return _ZOO[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name with freshly initialised weights (eval mode)."""
    model = get_model_spec(name).factory(**kwargs)
    return model.eval()
