"""The seeded sweep's summary, tables and plot from rows (synthetic rows: no model is pruned)."""

from __future__ import annotations

import pytest

from benchmarks.sweep_report import markdown, plot, summarise

METHODS = ["lpnet", "knapsack", "uniform", "tp-magnitude"]


def _rows() -> list[dict]:
    rows = []
    for seed in (1, 2, 3):
        for budget in (0.4, 0.6, 0.8):
            for offset, method in enumerate(METHODS):
                ms = budget * (1.0 - 0.01 * offset)
                rows.append({"method": method, "seed": seed, "budget_ratio": budget, "measured_latency_ms": ms,
                             "dense_latency_ms": 1.0, "dense_accuracy": 0.98,
                             "accuracy_after_bn_recalibration": ms - 0.1 * offset + 0.01 * seed,
                             "accuracy_finetuned": None if method == "uniform" else 0.9, "error": None})
    rows.append({"method": "tp-magnitude", "seed": 1, "budget_ratio": 0.1, "dense_latency_ms": 1.0,
                 "error": "not reached"})
    return rows


def test_summary_areas_follow_the_accuracy_gaps(tmp_path):
    summary = summarise(_rows(), METHODS)
    assert summary["seeds"] == [1, 2, 3] and len(summary["errors"]) == 1
    bn = summary["accuracy_after_bn_recalibration"]
    assert bn["range_ms"] == pytest.approx((0.4, 0.776))
    # lpnet sits 0.1 above knapsack and 0.2 above uniform on the same line (slope 1), up to the latency offsets
    assert bn["areas"]["lpnet - knapsack"]["mean"] == pytest.approx(0.1, abs=0.02)
    assert bn["areas"]["lpnet - uniform"]["mean"] == pytest.approx(0.2, abs=0.03)
    assert bn["areas"]["lpnet - uniform"]["n"] == 3
    assert "uniform" not in summary["accuracy_finetuned"]["mean_over_range"]  # no fine-tuned rows for it
    assert summary["rank_agreement"] == {}  # fine-tuned accuracy is constant here: no ranking to compare
    report = {"models": {"demo": {"input_shape": [1, 1, 28, 28], "methods": METHODS, "summary": summary}}}
    text = markdown(report)
    assert "| lpnet |" in text and "− uniform" in text and "± " in text
    plot(report, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_rank_agreement_reports_when_fine_tuning_reorders_the_points():
    rows = _rows()
    for row in rows:  # after fine-tuning the order is reversed: the worst before is the best after
        if row.get("error") is None:
            row["accuracy_finetuned"] = 1.0 - row["accuracy_after_bn_recalibration"]
    agreement = summarise(rows, METHODS)["rank_agreement"]
    assert set(agreement) == {"0.4", "0.6", "0.8"}
    assert all(v["rho"] == pytest.approx(-1.0) and v["points"] == 12 for v in agreement.values())
    report = {"models": {"demo": {"input_shape": [1, 1, 28, 28], "methods": METHODS,
                                  "summary": summarise(rows, METHODS)}}}
    assert "ρ = -1.00" in markdown(report)
