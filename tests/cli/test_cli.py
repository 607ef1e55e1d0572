"""The CLI end to end, and every bad input: one clear line, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from toolchain.cli import main

GOOD_FACTORY = """
import torch.nn as nn
def make():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
def not_a_module():
    return 42
def broken():
    raise RuntimeError("boom")
"""

# A layer that mixes channels in a way no pruner can follow: it folds channel pairs together.
UNSUPPORTED_OP = """
import torch.nn as nn
class PairFold(nn.Module):
    def forward(self, x):
        b, c, h, w = x.shape
        return x.reshape(b, 2, c // 2, h, w).sum(1)
def make():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), PairFold(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
"""


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def user_models(tmp_path):
    (tmp_path / "good.py").write_text(GOOD_FACTORY)
    (tmp_path / "unsupported.py").write_text(UNSUPPORTED_OP)
    return tmp_path


def test_prune_writes_a_verified_folder_and_json(tmp_path, capsys, user_models):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["prune", "--model", f"{user_models}/good.py:make", "--input-shape", "1,3,16,16",
                               "--ratio", "0.5", "--round-to", "4", "--out", str(out), "--json"], capsys)
    assert code == 0
    manifest = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "manifest.json", "model.onnx", "weights.safetensors"]
    for key in ["model", "input_shape", "dense_params", "params", "dense_macs", "macs", "ratio",
                "onnx_max_rel_err", "toolchain_version", "created_at"]:
        assert key in manifest
    assert manifest["params"] < manifest["dense_params"] and manifest["onnx_max_rel_err"] <= 1e-4
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_zoo_list(capsys):
    code, stdout, _ = run_cli(["zoo", "list", "--json"], capsys)
    assert code == 0
    names = {row["name"] for row in json.loads(stdout)}
    assert {"resnet18", "resnet50", "resnet56_cifar", "vgg16_bn_cifar", "mobilenet_v2", "densenet121", "unet",
            "vit_tiny", "demo"} <= names


def test_export_from_a_pruned_folder(tmp_path, capsys, user_models):
    out = tmp_path / "p"
    assert run_cli(["prune", "--model", f"{user_models}/good.py:make", "--input-shape", "1,3,16,16",
                    "--out", str(out)], capsys)[0] == 0
    code, stdout, _ = run_cli(["export", "--pruned", str(out), "--model", f"{user_models}/good.py:make",
                               "--out", str(tmp_path / "again.onnx")], capsys)
    assert code == 0 and (tmp_path / "again.onnx").is_file() and "max relative error" in stdout


def test_a_received_folder_never_runs_the_model_file_its_arch_json_names(tmp_path, capsys, user_models):
    out = tmp_path / "p"
    assert run_cli(["prune", "--model", f"{user_models}/good.py:make", "--input-shape", "1,3,16,16",
                    "--out", str(out)], capsys)[0] == 0
    marker = tmp_path / "ran"
    with open(user_models / "good.py", "a") as handle:  # the sender's file now does something on import
        handle.write(f"\nopen({str(marker)!r}, 'w').write('code ran')\n")
    code, _, err = run_cli(["export", "--pruned", str(out), "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2 and err.count("\n") == 1 and "--trust-model-file" in err
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()
    code, _, _ = run_cli(["export", "--pruned", str(out), "--trust-model-file", "--out", str(tmp_path / "x.onnx")],
                         capsys)
    assert code == 0 and marker.exists()


def _bad_weights(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"0.weight": torch.zeros(3, 3)}, str(path))
    return path


def _pickled_checkpoint(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "config": {"lr": Path("/x")}}, path)
    return path


BAD_INPUTS = {
    "unknown zoo name": (lambda d: ["--model", "zoo:resnet19"], "unknown zoo model 'resnet19'; valid: demo"),
    "missing factory file": (lambda d: ["--model", f"{d}/nope.py:make"], "model file not found"),
    "malformed spec": (lambda d: ["--model", "resnet18"], "malformed model spec"),
    "missing function": (lambda d: ["--model", f"{d}/good.py:nothing", "--input-shape", "1,3,8,8"],
                         "has no function 'nothing'"),
    "factory returns no module": (lambda d: ["--model", f"{d}/good.py:not_a_module", "--input-shape", "1,3,8,8"],
                                  "returned int, not a torch.nn.Module"),
    "factory raises": (lambda d: ["--model", f"{d}/good.py:broken", "--input-shape", "1,3,8,8"],
                       "factory .* failed: RuntimeError: boom"),
    "weights do not match": (lambda d: ["--model", "zoo:demo", "--weights", str(_bad_weights(d))],
                             "do not match the model"),
    "weights need pickle": (lambda d: ["--model", "zoo:demo", "--weights", str(_pickled_checkpoint(d))],
                            "needs pickle"),
    "ratio out of range": (lambda d: ["--model", "zoo:demo", "--ratio", "1.0"], "not in the range 0.0<=x<1.0"),
    "negative ratio": (lambda d: ["--model", "zoo:demo", "--ratio", "-0.1"], "not in the range 0.0<=x<1.0"),
    "input shape rejected": (lambda d: ["--model", "zoo:demo", "--input-shape", "1,3,28,28"],
                             "rejects input shape \\(1, 3, 28, 28\\)"),
    "malformed input shape": (lambda d: ["--model", "zoo:demo", "--input-shape", "1,a"], "not a shape"),
    "op the pruner cannot handle": (lambda d: ["--model", f"{d}/unsupported.py:make", "--input-shape", "1,3,8,8"],
                                    "module '2' \\(PairFold\\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_error_and_leaves_nothing(case, tmp_path, user_models, capsys):
    make_args, message = BAD_INPUTS[case]
    out = tmp_path / "out"
    code, _, err = run_cli(["prune", *make_args(user_models), "--out", str(out)], capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("…")]
    assert len(lines) == 1, err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temporary folder left behind"


def test_existing_user_folder_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "data.txt").write_text("keep me")
    code, _, err = run_cli(["prune", "--model", "zoo:demo", "--out", str(out)], capsys)
    assert code == 2 and "not a toolchain output folder" in err
    assert (out / "data.txt").read_text() == "keep me"


def test_console_script_entry_point_exits_2_on_bad_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "toolchain", "prune", "--model", "zoo:nope", "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown zoo model 'nope'")


def test_targets_lists_the_device_table_with_aliases(capsys):
    code, stdout, _ = run_cli(["targets", "--json"], capsys)
    assert code == 0
    rows = {row["name"]: row for row in json.loads(stdout)}
    assert {"cpu", "jetson-orin", "jetson-xavier", "h100"} <= set(rows)
    assert rows["jetson-orin"]["aliases"] == ["jetson"] and rows["jetson-orin"]["cuda_sm"] == "sm_87"
