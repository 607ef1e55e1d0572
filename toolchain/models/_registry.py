"""The model zoo registry: factories registered by decorator, one public door (`create_model`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.inputs import ModelInputs


@dataclass(frozen=True)
class ModelSpec:
    """A registered zoo entry: its factory and the input it expects (batch of 1)."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    task: str  # "classification", "dense-prediction" or "sentence-embedding"
    description: str
    # Builds the example inputs when they are not one float tensor of `input_shape` (token ids and a
    # mask, say); None means `torch.randn(input_shape)`.
    example_inputs: Callable[[], ModelInputs] | None = None


_ZOO: dict[str, ModelSpec] = {}


def register_model(input_shape: tuple[int, ...], task: str = "classification",
                   example_inputs: Callable[[], ModelInputs] | None = None):
    """Register a factory under its function name.

    >>> @register_model(input_shape=(1, 3, 32, 32))
    ... def tiny(): return nn.Conv2d(3, 4, 3)   # doctest: +SKIP
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _ZOO:
            raise ValueError(f"model {name!r} registered twice")
        doc = (factory.__doc__ or "").strip().splitlines()
        _ZOO[name] = ModelSpec(name, factory, tuple(input_shape), task, doc[0] if doc else "", example_inputs)
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
    """Build a zoo model by name (eval mode): freshly initialised weights, or pretrained ones where the entry says."""
    model = get_model_spec(name).factory(**kwargs)
    return model.eval()


def model_example_inputs(name: str, generator: torch.Generator | None = None) -> ModelInputs:
    """The inputs a zoo model is traced, verified and exported with (batch of 1)."""
    spec = get_model_spec(name)
    if spec.example_inputs is not None:
        return spec.example_inputs()
    return torch.randn(spec.input_shape, generator=generator)
