"""The pruned-model format: shapes as JSON (`arch.json`) plus weights as safetensors.

A pruned model is rebuilt from its factory (no pickle, no pruning history): build the dense
model, give every recorded module its new parameter shapes and structural attributes, then load
the weights strictly.

>>> save_pruned(pruned, dense, "out/")          # doctest: +SKIP
>>> model = load_pruned("out/", "zoo:demo")     # doctest: +SKIP
"""

from __future__ import annotations

import json
from concurrent.futures import Executor, Future
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph_scale import fold_weight_standardization, folded_convs
from toolchain.inputs import InputSpec, InputSpecs, specs_from_json, specs_to_json
from toolchain.models import load_weights, resolve_model

ARCH_VERSION = 1


def _structural_attrs(module: nn.Module) -> dict:
    """Integer (or tuple-of-int) attributes such as in_channels, num_features, num_heads."""
    attrs = {}
    for key, value in vars(module).items():
        # A torch.Size is a shape a forward cached (Ultralytics' Detect keeps its input's as `shape`, next to
        # anchors it does not save): restoring it without the anchors would break the next forward.
        if key.startswith("_") or isinstance(value, (bool, torch.Size)):
            continue
        if isinstance(value, int) or (
            isinstance(value, tuple) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            attrs[key] = list(value) if isinstance(value, tuple) else value
    return attrs


def describe_architecture(pruned: nn.Module, dense: nn.Module) -> dict[str, dict]:
    """Per module whose shapes changed: new parameter/buffer shapes and changed attributes."""
    dense_modules = dict(dense.named_modules())
    layers = {}
    for name, module in pruned.named_modules():
        reference = dense_modules.get(name)
        if reference is None:
            raise ToolchainError(f"module {name!r} of the pruned model is not in the dense model")
        tensors = {
            k: list(v.shape)
            for k, v in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            if v is not None
        }
        ref_tensors = {
            k: list(v.shape)
            for k, v in list(reference.named_parameters(recurse=False)) + list(reference.named_buffers(recurse=False))
            if v is not None
        }
        for key in getattr(module, "_non_persistent_buffers_set", ()):
            if key in tensors and tensors[key] != ref_tensors.get(key):
                # not in the state dict: a rebuilt model would hold a zeroed buffer of the new shape
                raise ToolchainError(f"module {name!r} ({type(module).__name__}) has a non-persistent buffer {key!r} "
                                     "that changed shape; the pruned model cannot be saved and rebuilt")
        attrs, ref_attrs = _structural_attrs(module), _structural_attrs(reference)
        changed_attrs = {k: v for k, v in attrs.items() if ref_attrs.get(k) != v}
        if tensors != ref_tensors or changed_attrs:
            layers[name] = {"type": type(module).__name__, "tensors": tensors, "attrs": changed_attrs}
    return layers


def apply_architecture(model: nn.Module, layers: dict[str, dict]) -> nn.Module:
    """Resize a freshly built dense model in place to the recorded shapes (values uninitialised)."""
    modules = dict(model.named_modules())
    for name, spec in layers.items():
        module = modules.get(name)
        if module is None:
            raise ToolchainError(f"arch.json names module {name!r}, which the model does not have")
        if type(module).__name__ != spec["type"]:
            raise ToolchainError(f"arch.json says {name!r} is a {spec['type']}, the model has {type(module).__name__}")
        for key, value in spec["attrs"].items():
            setattr(module, key, tuple(value) if isinstance(value, list) else value)
        for key, shape in spec["tensors"].items():
            current = module._parameters.get(key, module._buffers.get(key))
            if current is not None and list(current.shape) == list(shape):
                # unchanged: keep it (a non-persistent buffer such as Swin's relative_position_index is not in
                # the weights file, so replacing it would leave zeros)
                continue
            if key in module._parameters:
                old = module._parameters[key]
                module._parameters[key] = nn.Parameter(torch.empty(shape, dtype=old.dtype), old.requires_grad)
            elif key in module._buffers:
                old = module._buffers[key]
                module._buffers[key] = torch.zeros(shape, dtype=old.dtype)
            else:
                raise ToolchainError(f"arch.json names tensor {name}.{key}, which the model does not have")
    return model


def write_arch_and_weights(folder: Path, pruned: nn.Module, dense: nn.Module, model_spec: str,
                           inputs: InputSpecs, widths: dict[str, int], writer: Executor | None = None) -> Future | None:
    """Write `arch.json` and `weights.safetensors` into an existing folder.

    With `writer`, the weights file is written by that executor and its future returned: safetensors releases the
    GIL while it writes, so a second core hides the seconds a large model's file takes (2.4 GB for a pruned
    ViT-H/14). The model's tensors must not change until the future is done."""
    arch = {
        "format_version": ARCH_VERSION,
        "model": model_spec,
        "input_shape": list(inputs[0].shape),  # the first input's, for readers of one-tensor models
        "inputs": specs_to_json(inputs),
        "per_group_widths": widths,
        # weight-standardized convs pruning folded into plain ones: a reload folds them again before resizing
        "folded_standardized_convs": folded_convs(pruned, dense),
        "layers": describe_architecture(pruned, dense),
    }
    (folder / "arch.json").write_text(json.dumps(arch, indent=1))
    state = _saveable(pruned.state_dict())
    if writer is None:
        save_file(state, str(folder / "weights.safetensors"))
        return None
    return writer.submit(save_file, state, str(folder / "weights.safetensors"))


def _saveable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state as safetensors writes it: contiguous tensors, none sharing memory with another (tied weights are
    stored apart; loading ties them again). Only those tensors are copied: a 600 M-parameter model's state is
    2.4 GB, and copying all of it cost seconds of page faults.

    >>> shared = torch.ones(4)
    >>> saveable = _saveable({"a": shared, "b": shared})
    >>> [t.data_ptr() == shared.data_ptr() for t in saveable.values()]  # "b" is a copy
    [True, False]
    """
    storages: set[int] = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def arch_inputs(arch: dict) -> InputSpecs:
    """The example inputs an arch.json records (folders from before named inputs: one float tensor)."""
    try:
        if "inputs" in arch:
            return specs_from_json(arch["inputs"])
        return (InputSpec.float_input(tuple(arch["input_shape"])),)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolchainError(f"arch.json has malformed inputs: {exc}") from exc


def names_a_model_file(spec) -> bool:
    """Whether a model spec is `path/to/file.py:factory` (importing it runs that file), not a zoo or library name."""
    return isinstance(spec, str) and spec.rpartition(":")[0].endswith(".py")


def _model_source(arch: dict, arch_path: Path, model, trust_model_file: bool):
    """What to build the dense model from: the caller's model, or the one arch.json names when that is safe.

    A folder may come from someone else; its arch.json naming `their.py:make` must not run their code unless
    the user names the file (`model`, `--model`) or says they trust the folder (`trust_model_file`).
    """
    if model is not None:
        return model
    spec = arch["model"]
    if names_a_model_file(spec) and not trust_model_file:
        raise ToolchainError(f"{arch_path} names the model file {spec}; loading it would run that file's code. "
                             f"Name it yourself (--model {spec}) or pass --trust-model-file if you trust the folder")
    return spec


def load_pruned(folder: str | Path, model: str | nn.Module | None = None,
                trust_model_file: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild a pruned model from `arch.json` + `weights.safetensors` (eval mode).

    `model` overrides the factory recorded in arch.json (pass a dense module for models that
    came in as Python objects). A `file.py:factory` recorded in arch.json is only imported with
    `trust_model_file=True`: a received folder never runs code the caller did not ask for.
    """
    folder = Path(folder)
    arch_path = folder / "arch.json"
    if not arch_path.is_file():
        raise ToolchainError(f"{folder} is not a pruned-model folder: arch.json is missing")
    try:
        arch = json.loads(arch_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ToolchainError(f"{arch_path} is not valid JSON: {exc}") from exc
    if not isinstance(arch, dict) or arch.get("format_version") != ARCH_VERSION:
        version = arch.get("format_version") if isinstance(arch, dict) else None
        raise ToolchainError(f"{arch_path} has format version {version}, expected {ARCH_VERSION}")
    source = _model_source(arch, arch_path, model, trust_model_file)
    dense, _ = resolve_model(source, inputs=arch_inputs(arch))
    fold_weight_standardization(dense, only=set(arch.get("folded_standardized_convs", ())))
    apply_architecture(dense, arch["layers"])
    load_weights(dense, folder / "weights.safetensors")
    return dense.eval(), arch
