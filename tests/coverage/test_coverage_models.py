"""Generated from the coverage registry: one small model per family of torchvision, timm, transformers and
Ultralytics, pruned at ratio 0.5: every output keeps its shape, parameters drop, ONNX verified in onnxruntime.

Known failures live in `KNOWN_FAILURES` only: a fix makes its test pass, the strict xfail then fails, and
the fixer deletes the entry. Entries refused today also get a test that the refusal names the module.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from toolchain import ToolchainError, prune
from toolchain.coverage import build, list_entries
from toolchain.coverage.checks import (
    ONNX_MAX_REL_ERR,
    names_a_module,
    onnx_max_relative_error,
    parameter_count,
    run_outputs,
    shape_problem,
)
from toolchain.export.onnx import export_onnx, verify_onnx

# CPU seconds: a small config prunes in a few; past this the graph build is stuck (the speed item).
SMALL_PRUNE_LIMIT_S = 20


KINDS = ("refused", "unclear", "crash", "wrong", "unpruned", "slow")


@dataclass(frozen=True)
class Known:
    """Why an entry fails today, and which branch is fixing it.

    kind: refused (one-line ToolchainError naming `module`), unclear (one-line ToolchainError naming no module),
    crash (another exception), wrong (a model returned that fails the checks), unpruned (nothing removed),
    slow (over `SMALL_PRUNE_LIMIT_S` of CPU time: the graph build does not finish).
    """

    kind: str
    reason: str
    module: str | None = None


ATTN = "attention heads not pruned"

# Measured with the small configs after the attention, grouped-convolution and named-input work landed;
# the to-do list of issue #14.
# Empty since the MaxViT/PVT-v2 attention, MetaFormer Scale and NFNet weight-standardization work: a new entry
# that fails goes here, with the module its refusal names.
KNOWN_FAILURES: dict[str, Known] = {}

# Entries whose small config takes more than ~10 s of CPU time (or the full limit, when known to be slow).
SLOW_ENTRIES: set[str] = {k for k, known in KNOWN_FAILURES.items() if known.kind == "slow"} | {
    "timm:resnest14d",
}


def _entry_params() -> list:
    return [_entry_param(key) for key in list_entries(representative=True)]


def _entry_param(key: str):
    marks = []
    if key in KNOWN_FAILURES:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[key].reason))
    if key in SLOW_ENTRIES:
        marks.append(pytest.mark.slow)
    return pytest.param(key, marks=marks, id=key)


@contextmanager
def cpu_time_limit(seconds: int, what: str):
    """Raise TimeoutError once this process has used `seconds` of CPU time in the block.

    CPU time, not wall time: the machine is shared, and a loaded machine must not fail a test. The pruner's
    loops are Python, so the signal is delivered promptly.
    """

    def on_limit(_signum, _frame):
        raise TimeoutError(f"{what} used more than {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, on_limit)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


@pytest.mark.parametrize("key", _entry_params())
def test_prune_keeps_outputs_and_exports(key, tmp_path):
    built = build(key, "small")
    dense_outputs = run_outputs(built.model, built.inputs)
    dense_params = parameter_count(built.model)
    with cpu_time_limit(SMALL_PRUNE_LIMIT_S, f"pruning {key}"):
        result = prune(built.model, built.inputs, ratio=0.5)
    assert shape_problem(dense_outputs, run_outputs(result.model, built.inputs)) is None
    assert parameter_count(result.model) < dense_params
    path = export_onnx(result.model, built.inputs, tmp_path / "model.onnx").path
    assert verify_onnx(result.model, path, built.inputs, n_random=1) <= ONNX_MAX_REL_ERR
    # Loaded again here, independently of the exporter: a file the toolchain wrote must load and match.
    assert onnx_max_relative_error(result.model, built.inputs, path) <= ONNX_MAX_REL_ERR


@pytest.mark.parametrize("key", sorted(k for k, known in KNOWN_FAILURES.items() if known.kind == "refused"))
def test_refusal_is_one_line_naming_the_module(key):
    built = build(key, "small")
    with pytest.raises(ToolchainError) as refusal:
        prune(built.model, built.inputs, ratio=0.5)
    message = str(refusal.value)
    assert "\n" not in message
    assert KNOWN_FAILURES[key].module in message
    assert names_a_module(message, built.model)


def test_known_failures_name_registered_entries():
    unknown = (set(KNOWN_FAILURES) | SLOW_ENTRIES) - set(list_entries(representative=True))
    assert not unknown, f"not registered as test representatives: {sorted(unknown)}"
    assert all(k.kind in KINDS for k in KNOWN_FAILURES.values())
    assert all(k.module for k in KNOWN_FAILURES.values() if k.kind == "refused")
