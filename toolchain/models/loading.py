"""Turn user input into modules (a registered source `PREFIX:NAME` or `file.py:factory`); weights without pickle."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpec, InputSpecs
from toolchain.models.sources import SourceOptions, find_source, load_from_source
from toolchain.models.sources.zoo_models import DEMO_WEIGHTS  # noqa: F401  (re-exported)
from toolchain.user_code import call_user_code


def load_factory(spec: str):
    """Import `path/to/file.py:function` and return the function (not called)."""
    path_text, sep, func_name = spec.rpartition(":")
    if not sep or not path_text or not func_name:
        raise ToolchainError(f"malformed model spec {spec!r}; expected PREFIX:NAME (e.g. zoo:demo, timm:resnet18) "
                             "or path/to/file.py:factory")
    path = Path(path_text)
    if path.suffix != ".py":
        raise ToolchainError(f"malformed model spec {spec!r}: {path_text!r} is not a .py file")
    if not path.is_file():
        raise ToolchainError(f"model file not found: {path_text}")
    module_name = f"_toolchain_user_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    call_user_code(f"importing {path_text}", loader_spec.loader.exec_module, module)
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ToolchainError(f"{path_text} has no function {func_name!r}")
    return factory


def resolve_model(spec: str | nn.Module, weights: str | Path | None = None,
                  input_shape: tuple[int, ...] | None = None, inputs: InputSpecs = (),
                  trust_pickle: bool = False) -> tuple[nn.Module, InputSpecs]:
    """Build the model a user named and return it (eval mode) with the example inputs it takes.

    `spec` is `PREFIX:NAME` of a registered source (`zoo:`, `torchvision:`, `timm:`, `hf:`,
    `ultralytics:`), `path/to/file.py:factory` (a function returning an `nn.Module`), or an
    `nn.Module` object. `inputs` (named, typed) or `input_shape` (one float tensor) override the
    source's default inputs; user factories and modules need one of them.
    """
    if inputs and input_shape:  # before any slow model building
        raise ToolchainError("give --input or --input-shape, not both")
    default_inputs, default_weights = None, None
    if isinstance(spec, nn.Module):
        model = spec
    elif find_source(spec) is not None:
        sourced = load_from_source(spec, SourceOptions(trust_pickle=trust_pickle))
        model, default_inputs, default_weights = sourced.model, sourced.inputs, sourced.default_weights
    else:
        factory = load_factory(spec)
        model = call_user_code(f"factory {spec}", factory)
        if not isinstance(model, nn.Module):
            raise ToolchainError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
    specs = tuple(inputs) or ((InputSpec.float_input(input_shape),) if input_shape else default_inputs)
    if not specs:
        raise ToolchainError(f"no example input known for {spec}; pass --input-shape, e.g. 1,3,224,224, "
                             "or --input NAME:DTYPE:SHAPE per input")
    weights = weights if weights is not None else default_weights
    if weights is not None:
        load_weights(model, weights)
    return model.eval(), specs


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ToolchainError(f"cannot read safetensors file {path}: {exc}") from exc
    if path.suffix in {".pt", ".pth", ".bin"}:
        if not zipfile.is_zipfile(path):
            raise ToolchainError(f"{path} is not a torch zip checkpoint (legacy pickle formats are refused)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ToolchainError(
                f"{path} needs pickle to load (it stores Python objects, not just tensors); refusing. "
                "Save a state_dict, or convert it to safetensors"
            ) from exc
        except Exception as exc:
            raise ToolchainError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ToolchainError(f"{path} does not hold a state_dict of tensors")
        return state
    raise ToolchainError(f"unsupported weights format {path.suffix!r}; use .safetensors or .pt")


def load_weights(model: nn.Module, weights: str | Path) -> None:
    """Load a state dict (safetensors, or `.pt` through `weights_only=True`) strictly into `model`."""
    path = Path(weights)
    if not path.is_file():
        raise ToolchainError(f"weights file not found: {path}")
    state = _read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"shape mismatch at {k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
        raise ToolchainError(f"weights {path} do not match the model: " + "; ".join(parts))
    # A safetensors file has no module versions: give the model's own (torchvision's MNASNet refuses a state
    # dict without them), as if the file had been written by this version of the model's code.
    state = OrderedDict(state)
    state._metadata = getattr(expected, "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=True)
