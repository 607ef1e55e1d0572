"""The variants a profiling campaign times: each job's physically pruned model (or single op), compiled for
the target, with the layer list its database row records.

Building one costs about as much as timing it (ResNet-18 at 224x224 on the 2-core host: ~0.8 s for the copy,
dependency graph, shrink, ONNX export and layer list; ~0.6-2 s of timing). Where the target compiles to bytes
(ONNX Runtime), `VariantBuilder` builds a chunk's variants in worker processes *before* the chunk is timed,
never while it is timed: a build running on the other core made timings 2-5% slower by their minimum and
6-12% by their median (ResNet-18 variants, thread-CPU clock; issue #3 notes).

Example:
    >>> with VariantBuilder("zoo:demo", (1, 1, 28, 28), model, x, get_target("cpu"), workers=2) as builder:
    ...     built = builder.build([{"kind": "model", "widths": {...}}])          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.inputs import ModelInputs, make_inputs, specs_from_key, vocab_size_of
from toolchain.latency.features import LayerSpec, layer_specs
from toolchain.targets import Runner, Runtime


def build_variant(model: nn.Module, example_input: ModelInputs, widths: dict[str, int]) -> nn.Module:
    """A physically pruned copy of `model` with exactly `widths` channels per group."""
    from toolchain.graph import PruningGraph

    variant = copy.deepcopy(model)
    PruningGraph(variant, example_input).shrink(widths)
    return variant.eval()


def single_op_input(layer: LayerSpec) -> torch.Tensor:
    """An input shaped for the one-layer model of `layer`."""
    if layer.op == "linear" and layer.in_h * layer.in_w != 1:
        return torch.randn(layer.batch, layer.in_h, layer.in_channels)
    if layer.op == "linear":
        return torch.randn(layer.batch, layer.in_channels)
    return torch.randn(layer.batch, layer.in_channels, layer.in_h, layer.in_w)


def single_op(layer: LayerSpec) -> tuple[nn.Module, torch.Tensor]:
    """A one-layer model and its input, shaped like `layer` (the unit of the lookup table)."""
    if layer.op in ("conv", "dwconv"):
        module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                           padding=layer.kernel // 2, groups=layer.groups, bias=False)
    elif layer.op == "linear":
        module = nn.Linear(layer.in_channels, layer.out_channels)
    else:
        raise ValueError(f"no single-op builder for {layer.op!r}")
    return module.eval(), single_op_input(layer)


def job_input(kind: str, widths: dict, example_input: ModelInputs) -> ModelInputs:
    """The input a job's variant is timed on: the model's, or one shaped for the single op."""
    return example_input if kind == "model" else single_op_input(LayerSpec(**widths))


def variant_of(kind: str, widths: dict, model: nn.Module,
               example_input: ModelInputs) -> tuple[nn.Module, ModelInputs]:
    """The module a job times and its input: a pruned copy of `model` ("model") or one layer ("layer")."""
    if kind == "model":
        return build_variant(model, example_input, widths), example_input
    return single_op(LayerSpec(**widths))


@dataclass(frozen=True)
class BuiltVariant:
    """A job's variant ready to be bound to the target: compiled bytes (built in a worker) or the module."""

    layers: tuple[dict, ...]  # the variant's layer list (LayerSpec dicts), as its database row stores it
    compiled: bytes | None = None
    module: nn.Module | None = None

    def runner(self, target: Runtime, example_input: ModelInputs) -> Runner:
        if self.compiled is not None:
            return target.load(self.compiled, example_input)
        return target.prepare(self.module, example_input)


def build_here(kind: str, widths: dict, model: nn.Module, example_input: ModelInputs,
               compile_for: Runtime | None = None) -> BuiltVariant:
    """A job's variant built in this process: the module, or its bytes compiled for `compile_for`."""
    variant, variant_input = variant_of(kind, widths, model, example_input)
    layers = tuple(layer.to_dict() for layer in layer_specs(variant, variant_input))
    if compile_for is not None:
        return BuiltVariant(layers, compiled=compile_for.compile(variant, variant_input))
    return BuiltVariant(layers, module=variant)


# -- worker processes -----------------------------------------------------------------------------------------
_WORKER: dict = {}  # in a worker: its own copy of the model, its input and the target


def _start_worker(model_spec: str, input_shape: tuple[int, ...], target: Runtime, parent_pid: int) -> None:
    from toolchain.models import resolve_model

    _exit_with_parent(parent_pid)
    torch.set_num_threads(1)  # one core per worker; the campaign runs as many workers as it wants cores
    # The worker's copy has other random weights; structure, widths and so timing are the same.
    model, specs = resolve_model(model_spec, inputs=specs_from_key(input_shape))
    _WORKER.update(model=model.eval(), example_input=make_inputs(specs, vocab_size_of(model)), target=target)


def _exit_with_parent(parent_pid: int) -> None:
    """A campaign killed with SIGKILL cannot stop its workers; each stops itself once its parent is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _build_in_worker(kind: str, widths: dict) -> BuiltVariant:
    return build_here(kind, widths, _WORKER["model"], _WORKER["example_input"], compile_for=_WORKER["target"])


class VariantBuilder:
    """Builds jobs' variants: in `workers` processes where the target compiles to bytes, here otherwise.

    A worker pool that breaks (a worker killed, e.g. out of memory) is given up and the rest is built here.
    """

    def __init__(self, model_spec: str, input_shape: tuple[int, ...], model: nn.Module,
                 example_input: ModelInputs, target: Runtime, workers: int = 2):
        self.model, self.example_input = model, example_input
        self._pool = None
        if workers > 1 and target.compiles_to_bytes:
            # spawn: a forked child of a process that already ran torch and ONNX Runtime threads can hang
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker,
                                             initargs=(model_spec, input_shape, target, os.getpid()))

    @property
    def parallel(self) -> bool:
        return self._pool is not None

    def build(self, jobs: list[tuple[str, dict]]) -> list[BuiltVariant | Exception]:
        """Each (kind, widths) job's variant, or the exception building it raised, in order."""
        if self._pool is not None:
            try:
                with _main_module_hidden():  # submitting starts the workers
                    futures = [self._pool.submit(_build_in_worker, kind, widths) for kind, widths in jobs]
                return [_outcome(future) for future in futures]
            except BrokenProcessPool:
                self.close()
        return [_attempt(lambda k=kind, w=widths: build_here(k, w, self.model, self.example_input))
                for kind, widths in jobs]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> VariantBuilder:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Workers started in this block do not import the caller's `__main__`.

    A spawned process re-runs the parent's main script before it works (multiprocessing's rule), and a script
    without an `if __name__ == "__main__"` guard would then run its campaign again inside the worker. The
    workers need only this package, so the main module is replaced by an empty one while they start.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _outcome(future) -> BuiltVariant | Exception:
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as error:  # noqa: BLE001 - reported per configuration
        return error


def _attempt(build) -> BuiltVariant | Exception:
    try:
        return build()
    except Exception as error:  # noqa: BLE001 - reported per configuration
        return error
