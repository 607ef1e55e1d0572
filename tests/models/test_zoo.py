"""Generated from the zoo registry: every model x ratio prunes, shrinks, runs, exports, matches ORT."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import example_input
from toolchain import create_model, list_models, prune
from toolchain.export.onnx import export_onnx, verify_onnx
from toolchain.models import get_model_spec

# Models taking one float image tensor. Pretrained token-input entries (zoo:minilm) need an optional
# package and their own inputs; tests/models/test_minilm.py and tests/test_transformer_pruning.py cover them.
IMAGE_MODELS = [n for n in list_models() if get_model_spec(n).task in ("classification", "dense-prediction")]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_zoo_model_runs_at_its_declared_shape_family(name):
    model = create_model(name)
    x = example_input(name)
    with torch.no_grad():
        out = model(x)
    spec = get_model_spec(name)
    if spec.task == "classification":
        assert out.shape[0] == 1 and out.ndim == 2
    else:
        assert out.shape[-2:] == x.shape[-2:]


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_prune_shrink_run_export(name, ratio, tmp_path):
    model = create_model(name)
    x = example_input(name)
    with torch.no_grad():
        dense_out = model(x)
    result = prune(model, x, ratio=ratio)
    m = result.manifest
    assert m["params"] < m["dense_params"]
    assert m["macs"] < m["dense_macs"]
    with torch.no_grad():
        pruned_out = result.model(x)
    assert pruned_out.shape == dense_out.shape
    assert torch.isfinite(pruned_out).all()
    # the input model is untouched
    with torch.no_grad():
        assert torch.equal(model(x), dense_out)
    exported = export_onnx(result.model, x, tmp_path / "model.onnx", n_random=1)
    assert exported.max_rel_err <= 1e-4
    assert verify_onnx(result.model, exported.path, x, n_random=1) <= 1e-4
