"""lpnet's structured prior (channel maps, per-layer work terms) and the choice of latency statistic."""

from dataclasses import replace

import pytest
import torch
from latency_synthetic import INPUT_SHAPE, synthetic_rows, write_synthetic_db

from toolchain.errors import ToolchainError
from toolchain.latency.features import LayerSpec
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.measure import summarize
from toolchain.latency.predictors import LatencyQuery, load_predictor
from toolchain.latency.predictors.lpnet import alignment_gate, fit_channel_maps


def _query(a: int, b: int) -> LatencyQuery:
    layers = (
        LayerSpec("conv", 3, a, 3, 1, 1, 8, 8, 8, 8),  # input constant, output = group a
        LayerSpec("linear", 2 * b, 10, 1, 1, 1, 1, 1, 1, 1),  # flatten of 2 positions: input = 2 x group b
        LayerSpec("conv", a + b, a + b, 3, 1, a + b, 8, 8, 8, 8),  # depthwise on a concat: a + b everywhere
    )
    return LatencyQuery("toy", (1, 3, 8, 8), {"a": a, "b": b}, layers, 1.0)


def test_channel_maps_recover_identity_multiple_concat_and_constant():
    queries = [_query(a, b) for a, b in [(4, 8), (16, 8), (9, 24), (32, 5), (7, 7)]]
    maps = fit_channel_maps(queries, ("a", "b"), (32, 24))
    assert maps["in_channels_offset"].tolist() == pytest.approx([3, 0, 0], abs=1e-4)
    assert torch.allclose(maps["in_channels_coef"], torch.tensor([[0.0, 0], [0, 2], [1, 1]]), atol=1e-4)
    assert torch.allclose(maps["out_channels_coef"], torch.tensor([[1.0, 0], [0, 0], [1, 1]]), atol=1e-4)
    assert maps["out_channels_offset"].tolist() == pytest.approx([0, 10, 0], abs=1e-4)
    assert maps["groups_coef"][2].tolist() == pytest.approx([1, 1], abs=1e-4)


def test_alignment_gate_is_one_on_multiples_and_small_elsewhere():
    gate = alignment_gate(torch.arange(1, 33, dtype=torch.float32))
    on = gate[7::8]  # 8, 16, 24, 32
    assert torch.allclose(on, torch.ones(4))
    off = torch.cat([gate[i * 8 : i * 8 + 7] for i in range(4)])
    assert float(off.max()) < 0.1


def test_lpnet_prior_is_nearly_exact_when_latency_is_a_sum_of_layer_work(synthetic_db):
    """The synthetic device is MACs + output elements with a penalty off multiples of 8: what the prior spans."""
    predictor = fit_predictor(FitConfig(db_path=str(synthetic_db), predictor="lpnet", train_steps=50))
    assert predictor.meta.heldout_metrics["mape_pct"] < 2.0
    assert predictor.meta.heldout_metrics["within_5pct"] == 1.0


@pytest.fixture(scope="module")
def min_below_median_db(tmp_path_factory):
    """Rows whose minimum is 80% of their median, as on a machine where other jobs add time to some runs."""
    rows = [replace(row, min_ms=0.8 * row.median_ms) for row in synthetic_rows(80)]
    return write_synthetic_db(tmp_path_factory.mktemp("statistic") / "latency.db", rows)


def test_statistic_chooses_what_is_learnt_and_is_recorded(min_below_median_db, tmp_path):
    fits = {s: fit_predictor(FitConfig(db_path=str(min_below_median_db), predictor="macs", statistic=s))
            for s in ("median", "min")}
    query = [LatencyQuery.from_row(r) for r in synthetic_rows(3, seed=5)]
    ratio = [m / d for m, d in zip(fits["min"].predict_many(query), fits["median"].predict_many(query))]
    assert ratio == pytest.approx([0.8] * 3, rel=1e-3)
    assert fits["min"].meta.training_data_hash != fits["median"].meta.training_data_hash
    loaded = load_predictor(fits["min"].save(tmp_path / "min"))
    assert loaded.meta.statistic == "min"


def test_unknown_statistic_is_a_clear_error(min_below_median_db):
    with pytest.raises(ToolchainError, match="unknown latency statistic 'mean'; valid: median, min"):
        fit_predictor(FitConfig(db_path=str(min_below_median_db), predictor="macs", statistic="mean"))


def test_measurement_value_by_statistic():
    measurement = summarize([3.0, 1.0, 2.0, 10.0])
    assert measurement.value("median") == 2.5 and measurement.value("min") == 1.0
    with pytest.raises(ToolchainError, match="valid: median, min"):
        measurement.value("p99")


def test_a_budget_refuses_a_predictor_fitted_on_another_statistic(synthetic_db, tmp_path):
    from toolchain.latency.provision import find_or_build_predictor
    from toolchain.targets import Target

    artifact = fit_predictor(FitConfig(db_path=str(synthetic_db), predictor="lpnet", train_steps=10,
                                       statistic="median")).save(tmp_path / "lpnet")
    with pytest.raises(ToolchainError, match="predicts median latency, but the target measures min"):
        find_or_build_predictor("synthetic:net", torch.nn.Identity(), INPUT_SHAPE,
                                Target("cpu", "onnxruntime", statistic="min"), artifact=str(artifact))


def _outdated_lpnet(synthetic_db, folder):
    """An lpnet artifact as the previous version wrote it (no structured prior in its parameters)."""
    import json

    artifact = fit_predictor(FitConfig(db_path=str(synthetic_db), predictor="lpnet", train_steps=10)).save(folder)
    document = json.loads((artifact / "predictor.json").read_text())
    del document["params"]["n_layers"]
    (artifact / "predictor.json").write_text(json.dumps(document))
    return artifact


def test_an_outdated_default_predictor_is_refitted_and_a_users_own_is_not_touched(synthetic_db, tmp_path,
                                                                                    monkeypatch):
    from toolchain.errors import OutdatedArtifactError
    from toolchain.latency import provision
    from toolchain.targets import Target

    spec = Target("cpu", "onnxruntime")
    default = provision.default_predictor_path("synthetic:net", INPUT_SHAPE, spec)
    monkeypatch.chdir(tmp_path)
    _outdated_lpnet(synthetic_db, tmp_path / default)
    with pytest.raises(OutdatedArtifactError):
        load_predictor(tmp_path / default)
    rebuilt = []

    def rebuild(*args, **kwargs):
        rebuilt.append(args[3])  # the artifact path
        raise RuntimeError("stop here")

    monkeypatch.setattr(provision, "_build_predictor", rebuild)
    with pytest.raises(RuntimeError, match="stop here"):
        provision.find_or_build_predictor("synthetic:net", torch.nn.Identity(), INPUT_SHAPE, spec)
    assert rebuilt == [default]
    with pytest.raises(OutdatedArtifactError, match="refit it with `toolchain fit`"):
        provision.find_or_build_predictor("synthetic:net", torch.nn.Identity(), INPUT_SHAPE, spec,
                                          artifact=str(tmp_path / default))


def test_an_artifact_never_replaces_a_folder_of_other_files(synthetic_db, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    predictor = fit_predictor(FitConfig(db_path=str(synthetic_db), predictor="macs"))
    with pytest.raises(ToolchainError, match="is not a toolchain output folder"):
        predictor.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    first = predictor.save(tmp_path / "artifact")
    assert predictor.save(first) == first and sorted(p.name for p in first.iterdir()) == ["predictor.json"]
