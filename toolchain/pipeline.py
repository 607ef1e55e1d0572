"""The prune pipeline: model -> prune (ratio or budget) -> recover -> verify -> export -> output folder.

A verified pruned model (`model.onnx`, `arch.json`, `weights.safetensors`, `manifest.json`) is built in a
temporary folder and renamed into place. `toolchain.deploy` runs it for a device (`toolchain.bundle`).

>>> folder = write_pruned_folder(PipelineConfig(model="zoo:demo", out=Path("dist/demo")))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from toolchain import defaults
from toolchain.archive import write_arch_and_weights
from toolchain.budget import BudgetJob
from toolchain.data import check_data_fits, resolve_data
from toolchain.export.onnx import export_onnx
from toolchain.inputs import InputSpecs, ModelInputs, make_inputs, run_checked, specs_to_json, vocab_size_of
from toolchain.manifest import Manifest
from toolchain.models import resolve_model
from toolchain.op_count import meta_copy
from toolchain.output_folder import atomic_folder, check_output_folder, stamp_of, write_json
from toolchain.pruning import PruneConfig, prune
from toolchain.recover import OnProgress, RecoveryConfig, recover

MANIFEST = "manifest.json"


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
    target: str = defaults.TARGET
    budget: BudgetJob | None = None  # prune under a latency budget instead of `prune.ratio`
    # Recovery of a ratio prune when there is data (a budget run recovers by its BudgetConfig's).
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    on_recovery: OnProgress | None = field(default=None, compare=False)  # recovery's progress (done, total, what)


Step = Callable[[str], None]
# Adds target-specific files to the folder being written: (folder, pruned model, example input,
# data splits or None, manifest to extend, step reporter).
Extension = Callable[[Path, torch.nn.Module, ModelInputs, object, dict, Step], None]


def write_pruned_folder(config: PipelineConfig, step: Step = lambda _: None, extend: Extension | None = None) -> dict:
    """Prune, recover (`toolchain.recover`: by the budget run, or here after a ratio prune; distillation from
    the dense model bounded by time when there is data, `config.recovery`), export and verify; return the
    manifest.

    `extend` adds target-specific artifacts (a TVM library, engine scripts) before the folder is
    renamed into place, so a failure there leaves nothing half-written either.
    """
    check_output_folder(config.out)  # before any slow work
    step("loading model")
    dense, specs = resolve_model(config.model, config.weights, config.input_shape, config.inputs, config.trust_pickle)
    example_input = make_inputs(specs, vocab_size_of(dense))
    if config.budget is not None:  # before profiling; a ratio prune's first forward is the same check
        run_checked(dense, example_input)
    data = resolve_data(config.data, config.model)
    if data is not None:
        check_data_fits(dense, data, config.data or "mnist5k")
    step("pruning")
    if config.budget is not None:
        result = config.budget.run(config.model, dense, example_input, data, step)
    elif data is None and isinstance(config.model, str):
        # Built here and not distilled from: pruned in place, only its structure kept (for arch.json); copying a
        # large model's weights costs seconds.
        structure = meta_copy(dense)
        result = prune(dense, example_input, config.prune, in_place=True)
        dense = structure
    else:
        result = prune(dense, example_input, config.prune)
    manifest = {"model": config.model if isinstance(config.model, str) else type(config.model).__name__,
                "target": config.target, **result.manifest, "inputs": specs_to_json(specs)}
    if config.budget is not None:
        manifest["ratio"] = None  # widths came from the budget, not from a uniform ratio
    elif data is not None:  # a budget run recovers and evaluates its model itself
        manifest.update(recover(result.model, dense, data, config.recovery, step, config.on_recovery))
    if data is not None:
        manifest["accuracy_data"] = config.data or "mnist5k"
    # The writer thread writes weights.safetensors while ONNX is exported and verified (and waits for it to
    # finish before the folder is renamed into place or removed).
    with atomic_folder(config.out) as tmp, ThreadPoolExecutor(1, thread_name_prefix="weights") as writer:
        weights_written = write_arch_and_weights(tmp, result.model, dense, manifest["model"], specs, result.widths,
                                                 writer)
        step("exporting ONNX and verifying it against PyTorch")
        exported = export_onnx(result.model, example_input, tmp / "model.onnx")  # verified in onnxruntime
        manifest["onnx_max_rel_err"] = exported.max_rel_err
        manifest["onnx_outputs_vary_with_input"] = exported.outputs_vary
        manifest["onnx_opset"] = exported.opset
        weights_written.result()
        if extend is not None:
            extend(tmp, result.model, example_input, data, manifest, step)
        manifest = Manifest.from_json(manifest).to_json()  # typed: the current version's layout
        write_json(tmp / MANIFEST, manifest)
    manifest.update(stamp_of(config.out / MANIFEST))  # as written: the CLI prints what the folder holds
    return manifest
