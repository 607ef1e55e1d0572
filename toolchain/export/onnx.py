"""ONNX export with proof: the exported graph must load in onnxruntime and reproduce eager PyTorch.

Inputs keep their names and dtypes (`input_ids: int64`, ...), outputs are the flattened output nest
named by `output_names` (`logits`, `last_hidden_state`, ...). The file (and the external data file of a
large model) is written in a hidden folder beside its destination and only moved into place once onnxruntime
has loaded it, run it and matched PyTorch.

>>> exported = export_onnx(model, torch.randn(1, 1, 28, 28), "model.onnx")   # doctest: +SKIP
>>> exported.max_rel_err
3.1e-07
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain.defaults import ONNX_OPSET
from toolchain.errors import ToolchainError
from toolchain.export.onnx_weights import export_weights_apart
from toolchain.inputs import (
    ModelInputs,
    as_positional,
    call_model,
    flatten_outputs,
    input_names,
    input_tensors,
    output_names,
    random_like,
)

DEFAULT_OPSET = ONNX_OPSET  # defined once in toolchain.defaults, for the exporter and the CLI alike
# The dynamo exporter implements opset 18 and up only; asked for 17 it converts its graph down with
# onnx's version converter, which keeps opset-18 attributes (GPT-2's `Split` with `num_outputs`) and
# writes a model onnxruntime refuses. Its fallback therefore exports at 18 or above.
DYNAMO_MIN_OPSET = 18
# Above this many parameters the weights are written apart from the graph (`onnx_weights`: the TorchScript
# exporter's in-memory copies of them cost 11.7 s of 21.6 s on a pruned ViT-H/14), and the dynamo fallback skips
# onnxscript's graph optimizer (its rewrite rules cost 21 s of a 105 s prune of ViT-L/16). onnxruntime applies its
# own graph optimisations when it loads the file anyway, and the file is verified in onnxruntime before it is kept.
LARGE_EXPORT_PARAMS = 100_000_000
MAX_REL_ERR_FP32 = 1e-4


@dataclass(frozen=True)
class OnnxExport:
    """A verified ONNX file: where it is, the opset it holds, its worst error against PyTorch, and whether the
    model's outputs changed with the input (False: by less than 1e-6 of their scale over the inputs compared,
    as a classifier that was never trained gives, or YOLO's untrained head, whose box outputs are its grid, so
    the comparison held near-constants; None: only one input was compared), and the files beside it that hold
    its weights (`model.onnx.data` for a large model), which must travel with it."""

    path: Path
    opset: int
    max_rel_err: float
    outputs_vary: bool | None = None
    external_data: tuple[Path, ...] = ()


def _export(model: nn.Module, example_input: ModelInputs, outputs: list[str], path: Path, opset: int,
            writer: Executor | None) -> tuple[int, Future | None]:
    """Write `path` with the TorchScript exporter, else dynamo; return the opset written, and the future of
    the external data file that `writer` is still writing (`onnx_weights`; a `writer` is passed only for a
    model over `LARGE_EXPORT_PARAMS` parameters)."""
    names = input_names(example_input)
    module, args = as_positional(model, example_input)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter is several times faster than the dynamo one on CPU and
        # handles every zoo model; the dynamo exporter is the fallback.
        try:
            with _attention_fast_path_off(), _process_output_discarded():
                data_written = None if writer is None else export_weights_apart(module, args, path, opset, names,
                                                                                 outputs, writer)
                if data_written is None:
                    torch.onnx.export(module, args, str(path), opset_version=opset, dynamo=False,
                                      input_names=names, output_names=outputs)
            return opset, data_written
        except Exception:
            for partial in (path, path.with_name(path.name + ".data")):  # what the first try may have left
                partial.unlink(missing_ok=True)
            dynamo_opset = max(opset, DYNAMO_MIN_OPSET)
            torch.onnx.export(module, args, str(path), opset_version=dynamo_opset, dynamo=True, verbose=False,
                              input_names=names, output_names=outputs, external_data=False,
                              optimize=writer is None)
            return dynamo_opset, None


@contextmanager
def _attention_fast_path_off() -> Iterator[None]:
    """Without gradients, `nn.MultiheadAttention` and `nn.TransformerEncoderLayer` take a fused fast path
    (`aten::_native_multi_head_attention`) that the TorchScript exporter cannot write, so every torchvision ViT
    fell back to the dynamo exporter (twice the time on ViT-B/16). Their plain path computes the same."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


@contextmanager
def _process_output_discarded() -> Iterator[None]:
    """Silence the process's stdout and stderr (file descriptors 1 and 2) for a while.

    The TorchScript exporter leaves its C++ log switched on (torch 2.14's `setup_onnx_logging` tests the function
    `_jit_is_onnx_log_enabled` instead of calling it) and, when it fails, prints the whole IR graph to stdout,
    hundreds of lines, before the dynamo exporter is tried instead.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "wb") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def export_onnx(model: nn.Module, example_input: ModelInputs, path: str | Path, opset: int = DEFAULT_OPSET,
                n_random: int | None = None, tolerance: float = MAX_REL_ERR_FP32) -> OnnxExport:
    """Export `model` at the example inputs' static shapes to `path`, verified before it appears there.

    The file is compared with PyTorch on the example input and `n_random` random ones (None: 2, and 1 above
    `LARGE_EXPORT_PARAMS`, where each costs seconds in both runtimes; one is enough to see the outputs vary).

    Raises `ToolchainError` (and leaves no file) when the export fails, onnxruntime cannot load or
    run the result, or its outputs differ from PyTorch beyond `tolerance`.
    """
    if opset < 17:
        raise ToolchainError(f"opset {opset} is too old; the toolchain exports opset >= 17")
    path = Path(path)
    # Written under its final file name in a hidden folder beside it: a large model's weights go to an external
    # data file that the graph names relative to itself (`model.onnx.data`), so the name must not change later.
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    staged = staging / path.name
    model = model.eval()
    large = sum(p.numel() for p in model.parameters()) > LARGE_EXPORT_PARAMS
    if n_random is None:
        n_random = 1 if large else 2
    try:
        with torch.no_grad():  # names the outputs, and is the first reference the file is verified against
            example_output = call_model(model, example_input)
        # A large model's weights file is written by a second thread while PyTorch computes the references.
        with ThreadPoolExecutor(1, thread_name_prefix="onnx-data") if large else nullcontext() as writer:
            try:
                written_opset, data_written = _export(model, example_input, output_names(example_output), staged,
                                                      opset, writer)
            except Exception as exc:
                raise ToolchainError(f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}") from exc
            references = pytorch_references(model, example_input, n_random, example_output=example_output)
            if data_written is not None:
                try:
                    data_written.result()
                except OSError as exc:
                    raise ToolchainError(f"cannot write the ONNX weights beside {path.name}: {exc}") from exc
        max_rel_err, outputs_vary = _verify_onnx(staged, references, tolerance)
        external_data = tuple(path.with_name(data.name) for data in staging.iterdir() if data != staged)
        for data in external_data:  # external data first, the graph that names it last
            os.replace(staging / data.name, data)
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OnnxExport(path, written_opset, max_rel_err, outputs_vary, external_data)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def onnx_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |a - b| / max |a|: relative to the output's scale, so near-zero entries don't dominate."""
    scale = max(float(np.abs(reference).max()), 1e-12)
    return float(np.abs(reference - candidate).max()) / scale


def check_finite_outputs(reference: np.ndarray, candidate: np.ndarray, label: str) -> None:
    """NaN compared with NaN gives a relative error of 0 ("verified"); a model with non-finite outputs is not."""
    for who, values in (("PyTorch", reference), (label, candidate)):
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise ToolchainError(f"cannot verify the {label}: the {who} outputs contain NaN or infinite values "
                                 "(NaN calibration data or weights?)")


@dataclass(frozen=True)
class Reference:
    """One input the compiled model is checked on, and PyTorch's flattened outputs for it."""

    inputs: ModelInputs
    outputs: list[torch.Tensor]


def pytorch_references(model: nn.Module, example_input: ModelInputs, n_random: int, seed: int = 0,
                       example_output=None) -> list[Reference]:
    """PyTorch's outputs on the example and `n_random` seeded random inputs (`random_like`: token ids stay
    inside the vocabulary). `example_output`: the model's output on the example when the caller has it."""
    generator = torch.Generator().manual_seed(seed)
    inputs = [example_input] + [random_like(example_input, generator) for _ in range(n_random)]
    model = model.eval()
    references = []
    for x in inputs:
        if x is example_input and example_output is not None:
            output = example_output
        else:
            with torch.no_grad():
                output = call_model(model, x)
        references.append(Reference(x, flatten_outputs(output)))
    return references


def compare_with_pytorch(model: nn.Module, run: Callable[[list[np.ndarray]], list[np.ndarray]],
                         example_input: ModelInputs, label: str, n_random: int = 2,
                         tolerance: float = MAX_REL_ERR_FP32, seed: int = 0) -> float:
    """Run a compiled model (`run`: input arrays in call order -> output arrays) and PyTorch on the
    example and `n_random` seeded random inputs (`random_like`: token ids stay inside the vocabulary);
    return the max relative error over every flattened output, raise above `tolerance`."""
    return _compare(run, pytorch_references(model, example_input, n_random, seed), label, tolerance)[0]


def _vary(first: list[torch.Tensor], other: list[torch.Tensor]) -> bool:
    """Did any output change by more than 1e-6 of its scale between two inputs (the ONNX check's own scale)?"""
    return any(a.shape != b.shape or max_relative_error(a.numpy(), b.numpy()) > 1e-6 for a, b in zip(first, other))


def _compare(run: Callable[[list[np.ndarray]], list[np.ndarray]], references: list[Reference], label: str,
             tolerance: float) -> tuple[float, bool | None]:
    """`compare_with_pytorch` over computed references, and whether PyTorch's outputs varied over the inputs
    (None: one input)."""
    worst = 0.0
    first = references[0].outputs
    vary = None if len(references) == 1 else any(_vary(first, r.outputs) for r in references[1:])
    for reference in references:
        expected = reference.outputs
        got = run([t.detach().cpu().numpy() for t in input_tensors(reference.inputs)])
        if len(got) != len(expected):
            raise ToolchainError(f"{label} has {len(got)} outputs, PyTorch has {len(expected)}")
        for e, g in zip(expected, got, strict=True):
            if tuple(e.shape) != tuple(g.shape):
                raise ToolchainError(f"{label} output shape {g.shape} differs from PyTorch {tuple(e.shape)}")
            check_finite_outputs(e.numpy(), np.asarray(g), label)
            worst = max(worst, max_relative_error(e.numpy(), g))
    if worst > tolerance:
        raise ToolchainError(f"{label} output differs from PyTorch: max relative error {worst:.2e} > {tolerance:.0e}")
    return worst, vary


def verify_onnx(model: nn.Module, path: str | Path, example_input: ModelInputs, n_random: int = 2,
                tolerance: float = MAX_REL_ERR_FP32, seed: int = 0) -> float:
    """Run the ONNX file in onnxruntime on the example and random inputs; return max relative error.

    Raises `ToolchainError` if onnxruntime cannot load or run it, or the error exceeds `tolerance`
    (1e-4 for fp32).
    """
    return _verify_onnx(path, pytorch_references(model, example_input, n_random, seed), tolerance)[0]


def _verify_onnx(path: str | Path, references: list[Reference], tolerance: float) -> tuple[float, bool | None]:
    try:
        session = onnx_session(path)
    except Exception as exc:  # onnxruntime's own exception types; an unloadable file is never "exported"
        raise ToolchainError(f"onnxruntime cannot load {Path(path).name}: {_first_line(exc)}") from exc
    names = [i.name for i in session.get_inputs()]

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) != len(names):
            raise ToolchainError(f"ONNX model takes inputs {names}, the example has {len(arrays)}")
        try:
            return session.run(None, dict(zip(names, arrays, strict=True)))
        except Exception as exc:
            raise ToolchainError(f"onnxruntime cannot run {Path(path).name}: {_first_line(exc)}") from exc

    return _compare(run, references, "ONNX model", tolerance)
