"""User code and user data that misbehave: a factory or data function calling sys.exit(0), raising, or giving
NaN, empty or wrongly shaped data is one `error:` line, exit 2 and nothing written, never a "verified" model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.evaluate import accuracy
from toolchain.export.onnx import compare_with_pytorch

USER_CODE = """
import sys
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

def make():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

def exits():
    sys.exit(0)

class ExitsInForward(nn.Module):
    def forward(self, x):
        sys.exit(0)

def exits_in_forward():
    return ExitsInForward()

def _split(n=8, fill=None, shape=(3, 8, 8)):
    x = torch.randn(n, *shape)
    if fill is not None:
        x[1, 0, 0, 0] = fill
    return TensorDataset(x, torch.zeros(n, dtype=torch.long))

def nan_calibration():
    return {"calib": _split(fill=float("nan")), "test": _split()}

def inf_test():
    return {"calib": _split(), "test": _split(fill=float("inf"))}

def empty():
    return {"calib": _split(), "test": _split(n=0)}

def raises():
    raise OSError("dataset server unreachable")

def data_exits():
    sys.exit(0)

def wrong_shape():
    return {"calib": _split(shape=(5, 8, 8)), "test": _split(shape=(5, 8, 8))}
"""

ENDINGS = {
    "factory calls sys.exit(0)": (["--model", "{d}/user.py:exits"], r"factory .*exits failed: called sys.exit\(0\)"),
    "forward calls sys.exit(0)": (["--model", "{d}/user.py:exits_in_forward"],
                                  r"model rejects input shape \(1, 3, 8, 8\): called sys.exit\(0\)"),
    "import calls sys.exit(0)": (["--model", "{d}/exits_on_import.py:make"],
                                 r"importing .*exits_on_import.py failed: called sys.exit\(0\)"),
    "NaN calibration data": (["--data", "{d}/user.py:nan_calibration"], "calib split .* NaN or infinite inputs"),
    "inf test data": (["--data", "{d}/user.py:inf_test"], "test split .* NaN or infinite inputs"),
    "empty test split": (["--data", "{d}/user.py:empty"], "test split of --data .* is empty"),
    "data function raises": (["--data", "{d}/user.py:raises"],
                             "data function .*raises failed: OSError: dataset server unreachable"),
    "data function calls sys.exit(0)": (["--data", "{d}/user.py:data_exits"], r"called sys.exit\(0\)"),
    "data of the wrong shape": (["--data", "{d}/user.py:wrong_shape"],
                                r"model cannot run on the calib split .*\(inputs of shape \(2, 5, 8, 8\)\)"),
}


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "user.py").write_text(USER_CODE)
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    return tmp_path


@pytest.mark.parametrize("case", sorted(ENDINGS))
def test_misbehaving_user_code_and_data_is_one_error_line_and_nothing_written(case, user_dir, capsys):
    extra, message = ENDINGS[case]
    extra = [part.format(d=user_dir) for part in extra]
    model = [] if "--model" in extra else ["--model", f"{user_dir}/user.py:make"]
    out = user_dir / "out"
    code = main(["prune", *model, *extra, "--input-shape", "1,3,8,8", "--round-to", "2", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("…")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and sorted(p.name for p in user_dir.iterdir()) == ["exits_on_import.py", "user.py"]


def test_nan_outputs_are_never_verified():
    model = nn.Linear(4, 2).eval()
    with torch.no_grad():
        model.bias[0] = float("nan")
    with pytest.raises(ToolchainError, match="cannot verify the ONNX model: the PyTorch outputs contain NaN"):
        compare_with_pytorch(model, lambda xs: [model(torch.from_numpy(xs[0])).detach().numpy()], torch.randn(1, 4),
                             "ONNX model")


def test_nan_from_the_compiled_model_is_never_verified():
    model = nn.Linear(4, 2).eval()
    with pytest.raises(ToolchainError, match="the TVM library outputs contain NaN"):
        compare_with_pytorch(model, lambda xs: [np.full((1, 2), np.nan, dtype=np.float32)], torch.randn(1, 4),
                             "TVM library")


def test_accuracy_refuses_nan_outputs_and_empty_data():
    data = TensorDataset(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    with pytest.raises(ToolchainError, match="NaN or infinite"):
        accuracy(model, data)
    with pytest.raises(ToolchainError, match="empty"):
        accuracy(nn.Linear(4, 2), TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
