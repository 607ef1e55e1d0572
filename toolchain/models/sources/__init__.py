"""Model sources: `PREFIX:NAME` specs resolved by the library that owns the model.

A source is one function registered for its prefix with `@register_source`; adding a library means
adding one file here. Each returns the module (eval mode) and the example inputs it expects, so a
user can type `--model timm:resnet18` and nothing else.

>>> load_from_source("torchvision:resnet18", SourceOptions()).inputs   # doctest: +SKIP
(InputSpec(name='input', dtype='float32', shape=(1, 3, 224, 224)),)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpecs


@dataclass(frozen=True)
class SourceOptions:
    """What a user allowed when naming a model. `trust_pickle` lets checkpoints that are pickles load
    (running code they contain); it is off unless asked for by name."""

    trust_pickle: bool = False


@dataclass(frozen=True)
class SourcedModel:
    """A built model, the inputs it expects (None: the user must say) and weights to load by default."""

    model: nn.Module
    inputs: InputSpecs | None
    default_weights: Path | None = None


SourceLoader = Callable[[str, SourceOptions], SourcedModel]


@dataclass(frozen=True)
class Source:
    prefix: str
    loader: SourceLoader
    package: str | None  # the import name it needs; None: nothing beyond the toolchain
    example: str


_SOURCES: dict[str, Source] = {}


def register_source(prefix: str, example: str, package: str | None = None):
    """Register `loader(name, options)` for `prefix:name` specs."""

    def wrap(loader: SourceLoader) -> SourceLoader:
        if prefix in _SOURCES:
            raise ValueError(f"model source {prefix!r} registered twice")
        _SOURCES[prefix] = Source(prefix, loader, package, example)
        return loader

    return wrap


def list_sources() -> list[str]:
    return sorted(_SOURCES)


def source_examples() -> str:
    """One help line: every accepted form of `--model`."""
    return ", ".join(_SOURCES[p].example for p in list_sources()) + " or path/to/file.py:factory"


def find_source(spec: str) -> Source | None:
    prefix, sep, _ = spec.partition(":")
    return _SOURCES.get(prefix) if sep else None


def load_from_source(spec: str, options: SourceOptions) -> SourcedModel:
    """Build the model a `PREFIX:NAME` spec names (the prefix must be registered)."""
    source = find_source(spec)
    if source is None:
        raise ToolchainError(f"unknown model source in {spec!r}; valid: {source_examples()}")
    name = spec.partition(":")[2]
    if not name:
        raise ToolchainError(f"{spec!r} names no model; e.g. {source.example}")
    if source.package is not None and importlib.util.find_spec(source.package) is None:
        raise ToolchainError(f"{source.prefix}: models need the {source.package!r} package, which is not installed "
                             f"(pip install {source.package})")
    sourced = source.loader(name, options)
    sourced.model.eval()
    return sourced


# Fill the registry (each module registers its prefix).
from toolchain.models.sources import (  # noqa: E402, F401
    hf_models,
    timm_models,
    torchvision_models,
    ultralytics_models,
    zoo_models,
)
