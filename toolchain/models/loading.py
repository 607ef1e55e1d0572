"""Turn user input into modules: `zoo:NAME` or `file.py:factory`, plus weights without pickle."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.models._registry import create_model, get_model_spec
from toolchain.user_code import call_user_code

DEMO_WEIGHTS = Path(__file__).parent / "weights" / "demo.safetensors"


def load_factory(spec: str):
    """Import `path/to/file.py:function` and return the function (not called)."""
    path_text, sep, func_name = spec.rpartition(":")
    if not sep or not path_text or not func_name:
        raise ToolchainError(f"malformed model spec {spec!r}; expected zoo:NAME or path/to/file.py:factory")
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
                  input_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model a user named and return it (eval mode) with its example input shape.

    `spec` is `zoo:NAME`, `path/to/file.py:factory` (a function returning an `nn.Module`), or an
    `nn.Module` object (a torchvision/timm model, say). User factories need `input_shape`.
    """
    if isinstance(spec, nn.Module):
        model, default_shape = spec, None
    elif spec.startswith("zoo:"):
        name = spec[len("zoo:"):]
        default_shape = get_model_spec(name).input_shape
        model = create_model(name)
        if name == "demo" and weights is None and DEMO_WEIGHTS.is_file():
            weights = DEMO_WEIGHTS
    else:
        factory = load_factory(spec)
        model = call_user_code(f"factory {spec}", factory)
        if not isinstance(model, nn.Module):
            raise ToolchainError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
        default_shape = None
    shape = tuple(input_shape) if input_shape else default_shape
    if shape is None:
        raise ToolchainError(f"no input shape known for {spec}; pass --input-shape, e.g. 1,3,224,224")
    if weights is not None:
        load_weights(model, weights)
    return model.eval(), shape


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
    model.load_state_dict(state, strict=True)
