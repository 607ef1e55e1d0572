"""``toolchain sparsify`` on a user factory model (needs toolchain.errors and toolchain.models)."""

import json

import pytest

pytest.importorskip("toolchain.errors", reason="toolchain.errors is not in this branch yet")
pytest.importorskip("toolchain.models", reason="toolchain.models is not in this branch yet")
from click.testing import CliRunner  # noqa: E402

from toolchain.commands.sparsify import sparsify  # noqa: E402

FACTORY = '''
import torch
from torch import nn


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
'''


@pytest.fixture
def model_spec(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(FACTORY)
    return f"{path}:small_cnn"


@pytest.mark.parametrize("pattern", ["2:4", "block4x4", "stripe"])
def test_sparsify_command_reports_matching_outputs(model_spec, tmp_path, pattern):
    out = tmp_path / "out"
    result = CliRunner().invoke(sparsify, ["--pattern", pattern, "--model", model_spec, "--input-shape",
                                           "2,3,6,6", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the report alone: library warnings (torch cpp_extension) go to stderr
    assert report["outputs_match"]
    assert report["replaced_layers"] == (["2"] if pattern == "stripe" else ["2", "5"])
    assert (out / "masked.safetensors").is_file() and (out / "sparsify.json").is_file()


def test_sparsify_command_rejects_an_unknown_pattern(model_spec):
    result = CliRunner().invoke(sparsify, ["--pattern", "3x3", "--model", model_spec])
    assert result.exit_code != 0
    assert "unknown pattern '3x3'" in str(result.exception) + result.output
