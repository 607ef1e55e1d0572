"""Predictors fit a small synthetic dataset, round-trip through artifacts, and refuse foreign queries."""

import json

import pytest
import torch
from latency_synthetic import GROUPS, INPUT_SHAPE, synthetic_layers, synthetic_rows

from toolchain.errors import ToolchainError
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.predictors import LatencyQuery, list_predictor_kinds, load_predictor
from toolchain.latency.store import MeasurementStore

TRAIN_STEPS = {"lpnet": 600, "layerwise": 400}


@pytest.fixture(scope="module")
def fitted(synthetic_db):
    """Each predictor fitted once on the synthetic database (short training: the data is noiseless)."""
    return {
        name: fit_predictor(FitConfig(db_path=str(synthetic_db), predictor=name, train_steps=steps))
        for name, steps in {**TRAIN_STEPS, "macs": 0}.items()
    }


def test_registry_lists_every_predictor():
    assert {"lpnet", "layerwise", "macs", "lut"} <= set(list_predictor_kinds())


@pytest.mark.parametrize("name, min_within_10pct", [("lpnet", 0.8), ("layerwise", 0.8), ("macs", 0.3)])
def test_fit_scores_and_round_trips(fitted, tmp_path, name, min_within_10pct):
    predictor = fitted[name]
    metrics = predictor.meta.heldout_metrics
    assert metrics["n"] > 10 and metrics["within_10pct"] >= min_within_10pct
    assert len(predictor.meta.training_data_hash) == 64

    out = predictor.save(tmp_path / name)
    loaded = load_predictor(out)
    queries = [LatencyQuery.from_row(r) for r in synthetic_rows(5, seed=7)]
    assert loaded.predict_many(queries) == pytest.approx(predictor.predict_many(queries), rel=1e-6)
    saved = json.loads((out / "predictor.json").read_text())["meta"]
    assert saved["target"] == "cpu" and saved["heldout_metrics"]["n"] == metrics["n"]


def test_lpnet_is_differentiable_in_the_widths_and_records_group_order(fitted):
    predictor = fitted["lpnet"]
    assert predictor.group_names == tuple(name for name, _, _ in GROUPS)
    assert predictor.meta.dense_widths == tuple(dense for _, dense, _ in GROUPS)
    widths = predictor.normalise({"stem": 16, "block1": 32, "block2": 64}).requires_grad_()
    latency_ms = predictor.module(widths)
    latency_ms.backward()
    assert latency_ms.item() > 0
    assert widths.grad is not None and torch.all(torch.isfinite(widths.grad))
    assert widths.grad.sum() > 0  # wider is slower


def test_lookup_table_baseline_interpolates_single_op_measurements(tmp_path):
    from toolchain.latency.predictors import create_predictor
    from toolchain.latency.predictors.artifact import ArtifactMeta

    single_ops = []
    for stem in (4, 16, 32):
        for block1 in (8, 32, 64):
            for block2 in (16, 64, 128):
                for layer in synthetic_layers({"stem": stem, "block1": block1, "block2": block2}):
                    if layer.op in ("conv", "linear"):
                        single_ops.append((layer, 0.05 * layer.macs / 1e6))
    meta = ArtifactMeta("lut", "cpu", "onnxruntime", 1, "fp0", {}, ("synthetic:net",), {})
    lut = create_predictor("lut", meta)
    lut.set_table(single_ops)
    train = [LatencyQuery.from_row(r) for r in synthetic_rows(60)]
    lut.fit(train)
    assert lut.evaluate([LatencyQuery.from_row(r) for r in synthetic_rows(30, seed=3)])["within_10pct"] > 0.8
    loaded = load_predictor(lut.save(tmp_path / "lut"))
    assert loaded.predict_many(train[:3]) == pytest.approx(lut.predict_many(train[:3]))


def test_artifact_for_another_target_is_refused(fitted, tmp_path):
    out = fitted["macs"].save(tmp_path / "macs")
    with pytest.raises(ToolchainError, match="trained for cpu/onnxruntime/1t, not cpu/tvm/1t"):
        load_predictor(out, target="cpu", backend="tvm")


def test_lpnet_refuses_another_model(fitted):
    predictor = fitted["lpnet"]
    foreign = LatencyQuery("zoo:other", INPUT_SHAPE, {"stem": 8}, ())
    with pytest.raises(ToolchainError, match="trained for synthetic:net, not 'zoo:other'"):
        predictor.predict_ms(foreign)


def test_empty_database_is_a_clear_error(tmp_path):
    MeasurementStore(tmp_path / "empty.db").close()
    with pytest.raises(ToolchainError, match="no measurements for cpu/onnxruntime/1t.*empty database"):
        fit_predictor(FitConfig(db_path=str(tmp_path / "empty.db"), predictor="lpnet"))


def test_unknown_predictor_names_valid_choices(synthetic_db):
    with pytest.raises(ToolchainError, match="unknown predictor 'xgb'; valid: layerwise, lpnet, lut, macs"):
        fit_predictor(FitConfig(db_path=str(synthetic_db), predictor="xgb"))


def test_not_an_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(ToolchainError, match="is not a predictor artifact"):
        load_predictor(tmp_path)


def _truncate_weights(folder):
    path = folder / "weights.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_weights(folder):
    (folder / "weights.safetensors").write_bytes(bytes(range(256)) * 8)


def _edit_params(folder, **changes):
    document = json.loads((folder / "predictor.json").read_text())
    document["params"].update(changes)
    (folder / "predictor.json").write_text(json.dumps(document))


CORRUPTIONS = {
    "truncated weights": _truncate_weights,
    "random weights": _random_weights,
    "missing weights": lambda folder: (folder / "weights.safetensors").unlink(),
    "edited hidden_units": lambda folder: _edit_params(folder, hidden_units=7),
    "predictor.json is []": lambda folder: (folder / "predictor.json").write_text("[]"),
    "meta without a field": lambda folder: (folder / "predictor.json").write_text(
        json.dumps({"meta": {"artifact_version": 1, "predictor": "lpnet"}})),
    "params not an object": lambda folder: _edit_params_document(folder, params=[1, 2]),
}


def _edit_params_document(folder, **changes):
    document = json.loads((folder / "predictor.json").read_text())
    document.update(changes)
    (folder / "predictor.json").write_text(json.dumps(document))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_damaged_artifact_is_one_clear_error(fitted, tmp_path, corruption):
    out = fitted["lpnet"].save(tmp_path / "lpnet")
    CORRUPTIONS[corruption](out)
    with pytest.raises(ToolchainError, match="predictor artifact"):
        load_predictor(out)


def test_a_damaged_predictor_during_a_budget_prune_is_one_clear_error(fitted, tmp_path):
    from toolchain.latency.provision import find_or_build_predictor
    from toolchain.models import create_model
    from toolchain.targets import Target

    out = fitted["lpnet"].save(tmp_path / "lpnet")
    _truncate_weights(out)
    with pytest.raises(ToolchainError, match="weights .* are unreadable"):
        find_or_build_predictor("zoo:demo", create_model("demo"), (1, 1, 28, 28), Target(), str(out))
