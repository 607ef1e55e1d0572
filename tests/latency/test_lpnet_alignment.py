"""lpnet's prior terms for channels off a multiple of 4, its robust (Huber) fit, and the artifact format guard."""

import json
from dataclasses import replace

import pytest
import torch
from latency_synthetic import synthetic_latency_ms, synthetic_rows, write_synthetic_db

from toolchain.errors import OutdatedArtifactError
from toolchain.latency.features import spec_from_dict
from toolchain.latency.fitting import FitConfig, fit_predictor
from toolchain.latency.predictors import LatencyQuery, load_predictor
from toolchain.latency.predictors import lpnet as lpnet_module
from toolchain.latency.predictors.lpnet import alignment_gate


def _with_latency(rows, latency_ms):
    out = []
    for row in rows:
        ms = latency_ms([spec_from_dict(d) for d in row.layers])
        out.append(replace(row, median_ms=ms, min_ms=ms))
    return out


def _quarter_penalty_ms(layers) -> float:
    """A device whose kernels lose 30% off a multiple of 4 output channels (as NCHW GEMM tails do)."""
    return 0.05 + sum(0.05 * layer.macs / 1e6 * (1.0 if layer.out_channels % 4 == 0 else 1.3) for layer in layers)


def test_half_period_gate_tells_multiples_of_four_from_the_rest():
    gate = alignment_gate(torch.arange(1, 33, dtype=torch.float32), lpnet_module.ALIGNMENT_PERIOD / 2)
    on = gate[3::4]
    assert torch.allclose(on, torch.ones_like(on))
    off = torch.cat([gate[i * 4 : i * 4 + 3] for i in range(8)])
    assert float(off.max()) < 1e-3


def test_prior_spans_a_device_that_is_slower_off_multiples_of_four(tmp_path):
    db = write_synthetic_db(tmp_path / "quarter.db", _with_latency(synthetic_rows(150), _quarter_penalty_ms))
    predictor = fit_predictor(FitConfig(db_path=str(db), predictor="lpnet", train_steps=10))
    assert predictor.meta.heldout_metrics["mape_pct"] < 1.0
    assert predictor.meta.heldout_metrics["within_5pct"] == 1.0


def test_a_few_outlying_measurements_do_not_pull_the_prior(tmp_path, monkeypatch):
    """Every 20th configuration measured 40% slow (a drifting machine): the Huber-weighted fit stays on the rest."""
    rows = _with_latency(synthetic_rows(150), synthetic_latency_ms)
    rows = [replace(r, min_ms=1.4 * r.min_ms) if i % 20 == 7 else r for i, r in enumerate(rows)]
    db = write_synthetic_db(tmp_path / "outliers.db", rows)
    clean = [LatencyQuery.from_row(r) for r in _with_latency(synthetic_rows(40, seed=3), synthetic_latency_ms)]

    def clean_mape(huber_rounds: int) -> float:
        monkeypatch.setattr(lpnet_module, "HUBER_ROUNDS", huber_rounds)
        fitted = fit_predictor(FitConfig(db_path=str(db), predictor="lpnet", train_steps=1, statistic="min"))
        return fitted.evaluate(clean)["mape_pct"]

    rounds = lpnet_module.HUBER_ROUNDS
    plain, robust = clean_mape(0), clean_mape(rounds)
    assert robust < 0.5 * plain, (robust, plain)


def test_an_artifact_with_the_previous_prior_terms_is_refused_and_a_current_one_round_trips(synthetic_db, tmp_path):
    fitted = fit_predictor(FitConfig(db_path=str(synthetic_db), predictor="lpnet", train_steps=10))
    artifact = fitted.save(tmp_path / "lpnet")
    queries = [LatencyQuery.from_row(r) for r in synthetic_rows(5, seed=9)]
    assert load_predictor(artifact).predict_many(queries) == pytest.approx(fitted.predict_many(queries), rel=1e-6)

    document = json.loads((artifact / "predictor.json").read_text())
    del document["params"]["prior_terms"]  # as the 8-term version wrote it
    (artifact / "predictor.json").write_text(json.dumps(document))
    with pytest.raises(OutdatedArtifactError, match="8 prior terms per layer.*refit it with `toolchain fit`"):
        load_predictor(artifact)
