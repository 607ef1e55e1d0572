"""Composite: its choice is fitted on one half of the calibration images and judged on the other, where it is
never worse than its best component; a combination that does not help falls back to that component."""

from __future__ import annotations

import pytest
import torch

from tests.saliency.test_criteria import FIRST, setup  # noqa: F401  (setup is a fixture)
from toolchain.errors import ToolchainError
from toolchain.saliency import _CRITERIA, SaliencyConfig, ScoringContext, score_groups, score_groups_report, to_ranks
from toolchain.saliency._masking import calibration_batches
from toolchain.saliency.composite import _keep_mask, _loss, split_calibration

SECOND = "features.3"


def _judge_loss(model, graph, scores, config, calib) -> float:
    """Joint loss on the composite's held-apart half with every group keeping its best channels."""
    context = ScoringContext(model, graph, calibration_batches(calib, config.batch_size, config.max_batches), config)
    _fit, judge = split_calibration(context, config.batch_size)
    widths = {g.name: max(1, round(config.probe_keep_ratio * g.width)) for g in graph.groups}
    return _loss(context, {n: _keep_mask(to_ranks(s), widths[n]) for n, s in scores.items()}, judge)


@pytest.mark.parametrize("keep_ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("seed", [0, 1])
def test_composite_is_never_worse_than_its_best_component_on_held_apart_data(setup, keep_ratio, seed):  # noqa: F811
    model, graph, calib = setup
    config = SaliencyConfig(composite_of=("l1", "taylor", "sensitivity", "redundancy", "random"),
                            probe_keep_ratio=keep_ratio, batch_size=32, max_batches=1, seed=seed)
    scores, report = score_groups_report(model, graph, "composite", calib, config)
    assert report["fit_images"] == report["judge_images"] == 16  # 32 images, two disjoint halves
    composite_loss = _judge_loss(model, graph, scores, config, calib)
    assert composite_loss == pytest.approx(report["calibration_loss"], abs=1e-5)
    for component in config.composite_of:
        alone = _judge_loss(model, graph, score_groups(model, graph, component, calib, config), config, calib)
        assert composite_loss <= alone + 1e-6
        assert report["judge_losses"][component] == pytest.approx(alone, abs=1e-5)


def test_the_halves_are_disjoint_and_cover_the_calibration_images(setup):  # noqa: F811
    model, graph, (inputs, labels) = setup
    context = ScoringContext(model, graph, calibration_batches((inputs[:7], labels[:7]), 4, 4), SaliencyConfig())
    fit, judge = split_calibration(context, batch_size=3)
    rows = torch.cat([x for x, _, _ in fit + judge])
    assert [x.shape[0] for x, _, _ in fit] == [3, 1] and sum(x.shape[0] for x, _, _ in judge) == 3
    assert sorted(rows.flatten(1).sum(1).tolist()) == sorted(inputs[:7].flatten(1).sum(1).tolist())


def _fake(scores_by_group):
    return lambda context: {n: scores_by_group[n].clone() for n in context.group_names}


def test_a_combination_that_does_not_help_falls_back_to_the_best_component(setup, monkeypatch):  # noqa: F811
    model, graph, calib = setup
    l1 = score_groups(model, graph, "l1", calib)
    monkeypatch.setitem(_CRITERIA, "twin_a", _fake(l1))
    monkeypatch.setitem(_CRITERIA, "twin_b", _fake(l1))  # identical: mean rank and per-group choice add nothing
    config = SaliencyConfig(composite_of=("twin_a", "twin_b"), batch_size=32)
    scores, report = score_groups_report(model, graph, "composite", calib, config)
    assert report["fell_back"] and report["chosen"] == "twin_a"
    assert all(torch.equal(scores[n], to_ranks(l1[n])) for n in scores)


def test_the_per_group_choice_wins_when_each_component_is_good_in_one_group(setup, monkeypatch):  # noqa: F811
    model, graph, calib = setup
    l1 = score_groups(model, graph, "l1", calib)
    monkeypatch.setitem(_CRITERIA, "good_first", _fake({FIRST: l1[FIRST], SECOND: -l1[SECOND]}))
    monkeypatch.setitem(_CRITERIA, "good_second", _fake({FIRST: -l1[FIRST], SECOND: l1[SECOND]}))
    config = SaliencyConfig(composite_of=("good_first", "good_second"), batch_size=32, probe_keep_ratio=0.5)
    scores, report = score_groups_report(model, graph, "composite", calib, config)
    assert report["choices"] == {FIRST: "good_first", SECOND: "good_second"}
    assert report["chosen"] == "per_group" and not report["fell_back"]
    assert report["judge_losses"]["per_group"] < min(report["judge_losses"]["good_first"],
                                                     report["judge_losses"]["good_second"])


def test_composite_refuses_a_single_calibration_image(setup):  # noqa: F811
    model, graph, (inputs, labels) = setup
    with pytest.raises(ToolchainError, match="at least 2 calibration images"):
        score_groups(model, graph, "composite", (inputs[:1], labels[:1]))
