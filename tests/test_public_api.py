"""The public face: every name importable from `toolchain`, and each one's docstring example runs as written."""

from __future__ import annotations

import doctest
import tempfile
from pathlib import Path

import pytest
import torch

import toolchain
from tests.test_budget import fake_target, predictor

# The names a budget run needs, one door for each.
BUDGET_API = ("prune_to_budget", "BudgetConfig", "Target", "deploy", "load_predictor")


def test_every_public_name_is_importable_from_toolchain():
    assert set(BUDGET_API) <= set(toolchain.__all__)
    for name in toolchain.__all__:
        assert getattr(toolchain, name) is not None, name


def test_deploy_is_the_function_and_the_pipeline_module_keeps_its_imports():
    from toolchain.pipeline import PipelineConfig, write_pruned_folder

    assert callable(toolchain.deploy) and toolchain.deploy.__module__ == "toolchain.deployment"
    assert PipelineConfig.__module__ == write_pruned_folder.__module__ == "toolchain.pipeline"


def _run_examples(obj) -> doctest.TestResults:
    """Run the docstring examples of `obj` with the public names in scope, plus fake providers for the
    budget run (a synthetic predictor, a deterministic target) and the demo model's input `x`."""
    measurer, _ = fake_target(fixed_ms=0.1)
    scope = {"toolchain": toolchain, "torch": torch, "Path": Path, "tempfile": tempfile,
             "Target": toolchain.Target, "load_predictor": toolchain.load_predictor,
             "predictor": predictor(0.1), "measurer": measurer, "x": torch.randn(1, 1, 28, 28)}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = doctest.DocTestFinder(recurse=False).find(obj, obj.__name__, globs=scope)
    assert tests and tests[0].examples, f"{obj.__name__} has no docstring example"
    for test in tests:
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", [
    "prune_to_budget", "BudgetConfig", "Target", "load_predictor",
    pytest.param("deploy", marks=[pytest.mark.tvm, pytest.mark.slow]),  # compiles the TVM library for this host
])
def test_the_docstring_example_of_each_budget_entry_point_runs(name):
    results = _run_examples(getattr(toolchain, name))
    assert results.failed == 0 and results.attempted >= 3


def test_the_package_example_runs():
    results = _run_examples(toolchain)
    assert results.failed == 0 and results.attempted >= 3
