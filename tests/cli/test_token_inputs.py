"""Token-input models through the CLI: `--model hf:DIR` with its default inputs or `--input NAME:DTYPE:SHAPE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.cli import main

transformers = pytest.importorskip("transformers", reason="transformers is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The single `error:` line of a failed run (progress steps may precede it), never a traceback."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer BERT classifier (random weights) saved as a Hugging Face folder."""
    folder = tmp_path_factory.mktemp("hf") / "bert"
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, vocab_size=120, max_position_embeddings=64, num_labels=3)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def onnx_io(path):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ([(i.name, i.type, i.shape) for i in session.get_inputs()],
            [(o.name, o.shape) for o in session.get_outputs()])


def test_prune_token_model_with_named_int64_inputs(tiny_bert, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(["prune", "--model", f"hf:{tiny_bert}", "--input", "input_ids:int64:2,32",
                                 "--input", "attention_mask:int64:2,32", "--ratio", "0.5", "--out", str(out),
                                 "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(stdout)
    assert manifest["params"] < manifest["dense_params"]
    assert manifest["onnx_max_rel_err"] <= 1e-4
    assert manifest["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [2, 32]},
                                  {"name": "attention_mask", "dtype": "int64", "shape": [2, 32]}]
    inputs, outputs = onnx_io(out / "model.onnx")
    assert inputs == [("input_ids", "tensor(int64)", [2, 32]), ("attention_mask", "tensor(int64)", [2, 32])]
    assert outputs == [("logits", [2, 3])]  # the dense output shape, named after the ModelOutput field
    assert json.loads((out / "arch.json").read_text())["inputs"] == manifest["inputs"]

    # The folder rebuilds with its recorded inputs and re-exports, verified again.
    code, stdout, err = run_cli(["export", "--pruned", str(out), "--out", str(tmp_path / "again.onnx")], capsys)
    assert code == 0, err
    assert onnx_io(tmp_path / "again.onnx") == (inputs, outputs)


def test_prune_token_model_with_default_inputs(tiny_bert, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(["prune", "--model", f"hf:{tiny_bert}", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    inputs, _ = onnx_io(out / "model.onnx")
    # max_position_embeddings=64 caps the default sequence length of 128
    assert inputs == [("input_ids", "tensor(int64)", [1, 64]), ("attention_mask", "tensor(int64)", [1, 64])]


@pytest.mark.parametrize("value, words", [
    ("input_ids:int65:1,32", "dtype 'int65' is not one of"),
    ("input_ids:int64:1,-3", "positive sizes"),
    ("input_ids:int64", "NAME:DTYPE:SHAPE"),
])
def test_bad_input_is_one_error_line(value, words, tiny_bert, tmp_path, capsys):
    code, stdout, err = run_cli(["prune", "--model", f"hf:{tiny_bert}", "--input", value,
                                 "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and stdout == ""
    assert words in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_repeated_input_and_shape_with_inputs_are_refused(tiny_bert, tmp_path, capsys):
    code, _, err = run_cli(["prune", "--model", f"hf:{tiny_bert}", "--input", "input_ids:int64:1,8",
                            "--input", "input_ids:int64:1,8", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "given more than once" in one_error_line(err)
    code, _, err = run_cli(["prune", "--model", f"hf:{tiny_bert}", "--input", "input_ids:int64:1,8",
                            "--input-shape", "1,8", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "not both" in one_error_line(err)


def test_wrong_input_name_is_one_error_line(tiny_bert, tmp_path, capsys):
    code, _, err = run_cli(["prune", "--model", f"hf:{tiny_bert}", "--input", "tokens:int64:1,8",
                            "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and one_error_line(err).startswith("error: the model rejects inputs tokens (1, 8)")


def test_pickle_checkpoint_refused_without_the_flag(tmp_path, capsys):
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"never unpickled")
    code, _, err = run_cli(["prune", "--model", f"ultralytics:{checkpoint}", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--trust-pickle" in one_error_line(err)


@pytest.mark.slow
def test_deploy_feeds_named_inputs_to_onnxruntime_and_tvm(tmp_path, capsys):
    """The bundle's latency measurement (onnxruntime) and TVM library check take every named int64 input."""
    pytest.importorskip("tvm", reason="apache-tvm is not installed")
    factory = str(Path(__file__).parents[1] / "latency" / "token_model.py") + ":factory"
    out = tmp_path / "bundle"
    code, stdout, err = run_cli(["deploy", "--model", factory, "--input", "input_ids:int64:1,8",
                                 "--input", "attention_mask:int64:1,8", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(stdout)
    assert manifest["tvm"]["max_rel_err"] <= 1e-4 and manifest["latency"]
    assert manifest["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": [1, 8]}


@pytest.mark.slow
def test_budget_prune_profiles_and_predicts_with_named_inputs(tmp_path, capsys, monkeypatch):
    """Under a latency budget the on-the-fly campaign, the predictor and `predict --pruned` use the named inputs."""
    monkeypatch.chdir(tmp_path)  # the profile database and predictor go under ./runs
    factory = str(Path(__file__).parents[1] / "latency" / "token_model.py") + ":factory"
    named = ["--input", "input_ids:int64:1,8", "--input", "attention_mask:int64:1,8"]
    code, stdout, err = run_cli(["prune", "--model", factory, *named, "--budget-ms", "100", "--profile-samples", "10",
                                 "--criterion", "l1", "--out", "out", "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(stdout)
    assert manifest["budget_met"] and manifest["inputs"][1]["name"] == "attention_mask"
    [artifact] = (tmp_path / "runs" / "predictors").iterdir()
    assert "input_ids-int64-1-8" in artifact.name  # the inputs key names the predictor
    code, stdout, err = run_cli(["predict", "--predictor", str(artifact), "--pruned", "out", "--trust-model-file",
                                 "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["predicted_ms"] > 0
