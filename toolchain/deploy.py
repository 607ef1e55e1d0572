"""Writing output folders: a verified pruned model (`model.onnx`, `arch.json`,
`weights.safetensors`, `manifest.json`), built in a temporary folder and renamed into place.

>>> folder = write_pruned_folder(PipelineConfig(model="zoo:demo", out=Path("dist/demo")))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toolchain.archive import write_arch_and_weights
from toolchain.budget import BudgetJob
from toolchain.data import resolve_data
from toolchain.errors import ToolchainError
from toolchain.evaluate import accuracy
from toolchain.export.onnx import export_onnx
from toolchain.inputs import InputSpecs, ModelInputs, make_inputs, specs_to_json, vocab_size_of
from toolchain.models import resolve_model
from toolchain.pruning import PruneConfig, check_runs, prune
from toolchain.recover import recalibrate_batchnorm

MANIFEST = "manifest.json"
# Files that mark a folder as a toolchain output, which a later run may replace.
OUTPUT_MARKERS = (MANIFEST, "sparsify.json")


@dataclass(frozen=True)
class PipelineConfig:
    """One prune-and-export job: which model, how much to remove, where to write."""

    model: str
    out: Path
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None  # one float tensor; or `inputs`, named and typed
    inputs: InputSpecs = ()
    trust_pickle: bool = False  # let a source load pickle checkpoints (`--trust-pickle`)
    data: str | None = None  # None: MNIST-5k for zoo:demo, nothing otherwise
    prune: PruneConfig = field(default_factory=PruneConfig)
    target: str = "cpu"
    budget: BudgetJob | None = None  # prune under a latency budget instead of `prune.ratio`


Step = Callable[[str], None]
# Adds target-specific files to the folder being written: (folder, pruned model, example input,
# data splits or None, manifest to extend, step reporter).
Extension = Callable[[Path, torch.nn.Module, ModelInputs, object, dict, Step], None]


def _make_readable(folder: Path) -> None:
    """mkdtemp (and some writers) create owner-only files; an output folder is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        wanted = (0o777 if path.is_dir() else 0o666 | (path.stat().st_mode & 0o111)) & ~umask
        path.chmod(path.stat().st_mode | wanted)


def check_output_folder(out: Path) -> None:
    """Refuse an `--out` that holds something other than an earlier toolchain output."""
    out = Path(out)
    is_ours = out.is_dir() and any((out / marker).is_file() for marker in OUTPUT_MARKERS)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_ours)):
        raise ToolchainError(f"--out {out} exists and is not a toolchain output folder; choose another path")


@contextmanager
def atomic_folder(out: Path):
    """Yield a temporary folder next to `out`; on success it replaces `out` in one rename.

    An existing `out` is only replaced when it is a toolchain output (has a manifest.json), so a
    wrong `--out` never destroys a user's data.
    """
    out = Path(out)
    check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _make_readable(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def write_pruned_folder(config: PipelineConfig, step: Step = lambda _: None, extend: Extension | None = None) -> dict:
    """Prune, recover (BatchNorm re-calibration), export and verify; return the manifest.

    `extend` adds target-specific artifacts (a TVM library, engine scripts) before the folder is
    renamed into place, so a failure there leaves nothing half-written either.
    """
    check_output_folder(config.out)  # before any slow work
    step("loading model")
    dense, specs = resolve_model(config.model, config.weights, config.input_shape, config.inputs, config.trust_pickle)
    example_input = make_inputs(specs, vocab_size_of(dense))
    check_runs(dense, example_input)
    data = resolve_data(config.data, config.model)
    dense_accuracy = None
    if data is not None:
        step("evaluating the dense model")
        dense_accuracy = accuracy(dense, data.test)
    step("pruning")
    if config.budget is not None:
        result = config.budget.run(config.model, dense, example_input, data, step)
    else:
        result = prune(dense, example_input, config.prune)
    manifest = {"model": config.model if isinstance(config.model, str) else type(config.model).__name__,
                "target": config.target, **result.manifest, "inputs": specs_to_json(specs)}
    if config.budget is not None:
        manifest["ratio"] = None  # widths came from the budget, not from a uniform ratio
    if data is not None and config.budget is not None:  # recovered and evaluated by the budget loop
        manifest["accuracy_data"] = config.data or "mnist5k"
    elif data is not None:
        step("re-calibrating BatchNorm and evaluating")
        recalibrate_batchnorm(result.model, data.calib)
        manifest["dense_accuracy"] = dense_accuracy
        manifest["accuracy"] = accuracy(result.model, data.test)
        manifest["accuracy_data"] = config.data or "mnist5k"
    with atomic_folder(config.out) as tmp:
        step("exporting ONNX and verifying it against PyTorch")
        exported = export_onnx(result.model, example_input, tmp / "model.onnx")  # verified in onnxruntime
        manifest["onnx_max_rel_err"] = exported.max_rel_err
        manifest["onnx_opset"] = exported.opset
        write_arch_and_weights(tmp, result.model, dense, manifest["model"], specs, result.widths)
        if extend is not None:
            extend(tmp, result.model, example_input, data, manifest, step)
        write_json(tmp / MANIFEST, manifest)
    return manifest
