"""The profile / fit / predict commands: bad inputs give clear errors, a fitted artifact predicts."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from toolchain.commands.fit import fit
from toolchain.commands.predict import predict
from toolchain.commands.profile import profile
from toolchain.errors import ToolchainError
from toolchain.latency.store import MeasurementStore

TINY = str(Path(__file__).with_name("tiny_model.py")) + ":factory"


def _error_of(result) -> str:
    assert isinstance(result.exception, ToolchainError), result.output
    return str(result.exception)


def test_profile_unknown_target_lists_valid_ones(tmp_path):
    result = CliRunner().invoke(
        profile, ["--model", TINY, "--input-shape", "1,3,16,16", "--target", "npu", "--db", str(tmp_path / "m.db")]
    )
    assert "unknown target 'npu'; valid targets/backends: cpu: onnxruntime" in _error_of(result)


def test_profile_unknown_backend_lists_valid_ones(tmp_path):
    result = CliRunner().invoke(
        profile, ["--model", TINY, "--input-shape", "1,3,16,16", "--backend", "coreml", "--db", str(tmp_path / "m.db")]
    )
    assert "unknown backend 'coreml' for target 'cpu'; valid: onnxruntime, torch, tvm" in _error_of(result)


def test_fit_on_empty_database_says_it_is_empty(tmp_path):
    MeasurementStore(tmp_path / "empty.db").close()
    result = CliRunner().invoke(
        fit, ["--db", str(tmp_path / "empty.db"), "--predictor", "lpnet", "--out", str(tmp_path / "a")]
    )
    assert "holds no measurements" in _error_of(result) and "empty database" in _error_of(result)


def test_fit_on_missing_database_says_so(tmp_path):
    result = CliRunner().invoke(
        fit, ["--db", str(tmp_path / "none.db"), "--predictor", "macs", "--out", str(tmp_path / "a")]
    )
    assert "does not exist" in _error_of(result)


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    runner = CliRunner()
    result = runner.invoke(
        profile,
        [
            "--model",
            TINY,
            "--input-shape",
            "1,3,16,16",
            "--samples",
            "12",
            "--db",
            str(folder / "m.db"),
            "--warmup",
            "1",
            "--runs",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        fit, ["--db", str(folder / "m.db"), "--predictor", "macs", "--out", str(folder / "macs"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_train"] > 0
    result = runner.invoke(fit, ["--db", str(folder / "m.db"), "--predictor", "lpnet", "--out", str(folder / "lpnet")])
    assert result.exit_code == 0, result.output
    assert "within ±10%" in result.output
    return folder / "macs"


def test_predict_dense_model_prints_ms(tiny_artifact):
    result = CliRunner().invoke(
        predict, ["--predictor", str(tiny_artifact), "--model", TINY, "--input-shape", "1,3,16,16", "--json"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["predicted_ms"] > 0 and answer["target"] == "cpu" and answer["predictor"] == "macs"


def test_predict_refuses_artifact_for_another_target(tiny_artifact):
    result = CliRunner().invoke(
        predict,
        [
            "--predictor",
            str(tiny_artifact),
            "--model",
            TINY,
            "--input-shape",
            "1,3,16,16",
            "--target",
            "cpu",
            "--backend",
            "tvm",
        ],
    )
    assert "trained for cpu/onnxruntime/1t, not cpu/tvm/1t" in _error_of(result)


def test_predict_bad_input_shape_is_clear(tiny_artifact):
    result = CliRunner().invoke(
        predict, ["--predictor", str(tiny_artifact), "--model", TINY, "--input-shape", "one,3,16,16"]
    )
    assert result.exit_code == 2 and "is not a shape like 1,3,224,224" in result.output


def test_predict_pruned_folder_written_by_prune(tiny_artifact, tmp_path):
    from toolchain.archive import write_arch_and_weights
    from toolchain.models import resolve_model
    from toolchain.pruning import prune

    dense, inputs = resolve_model(TINY, input_shape=(1, 3, 16, 16))
    result = prune(dense, torch.randn(*inputs[0].shape), ratio=0.5)
    folder = tmp_path / "pruned"
    folder.mkdir()
    write_arch_and_weights(folder, result.model, dense, TINY, inputs, result.widths)
    for predictor in ("lpnet", "macs"):
        answer = CliRunner().invoke(
            predict, ["--predictor", str(tiny_artifact.parent / predictor), "--pruned", str(folder), "--model", TINY,
                      "--json"]
        )
        assert answer.exit_code == 0, answer.output
        assert json.loads(answer.output)["predicted_ms"] > 0 and json.loads(answer.output)["model"] == TINY


def test_profile_of_a_remote_device_without_rpc_says_what_is_needed(tmp_path):
    from toolchain.cli import main

    code = main(["profile", "--model", "zoo:demo", "--device", "jetson", "--db", str(tmp_path / "x.db")])
    assert code == 2
    assert not (tmp_path / "x.db").exists()


def test_spread_configs_need_a_farm(tmp_path, capsys):
    from toolchain.cli import main

    code = main(["profile", "--model", TINY, "--input-shape", "1,3,16,16", "--spread-configs", "2",
                 "--db", str(tmp_path / "x.db")])
    assert code == 2 and "--spread-configs needs a farm" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_profile_on_an_unreachable_farm_is_one_line(tmp_path, capsys):
    from toolchain.cli import main

    code = main(["profile", "--model", TINY, "--input-shape", "1,3,16,16", "--rpc-tracker", "127.0.0.1:1",
                 "--rpc-key", "jetson", "--db", str(tmp_path / "x.db")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: tracker 127.0.0.1:1 is unreachable") and err.count("\n") == 1
    assert not (tmp_path / "x.db").exists()


def test_device_rpc_target_comes_from_the_device_table():
    import json

    from toolchain.commands.profile import _device_rpc_target

    target = json.loads(_device_rpc_target("jetson", "127.0.0.1:9190", "jetson-orin"))
    assert target["mtriple"] == "aarch64-linux-gnu"
    assert _device_rpc_target("cpu", None, None) == ""


def test_predict_shows_the_score_on_allocator_outputs_when_the_artifact_has_one(tiny_artifact, tmp_path):
    import shutil

    scored = tmp_path / "scored"
    shutil.copytree(tiny_artifact, scored)
    document = json.loads((scored / "predictor.json").read_text())
    document["meta"]["allocator_heldout_metrics"] = {"n": 4, "within_10pct": 0.75}
    (scored / "predictor.json").write_text(json.dumps(document))
    arguments = ["--model", TINY, "--input-shape", "1,3,16,16"]
    plain = CliRunner().invoke(predict, ["--predictor", str(tiny_artifact), *arguments])
    shown = CliRunner().invoke(predict, ["--predictor", str(scored), *arguments])
    assert plain.exit_code == 0 and shown.exit_code == 0, plain.output + shown.output
    assert "allocator outputs" not in plain.output
    assert "on allocator outputs: 75%" in shown.output
    answer = json.loads(CliRunner().invoke(predict, ["--predictor", str(scored), *arguments, "--json"]).output)
    assert answer["allocator_heldout_metrics"] == {"n": 4, "within_10pct": 0.75}
