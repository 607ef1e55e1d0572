"""Every criterion on a tiny model: one finite score per channel, an obviously dead channel ranked last."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph
from toolchain.saliency import SaliencyConfig, list_criteria, score_groups, score_groups_report
from toolchain.saliency._masking import batch_statistics, masked, task_loss

DEAD = 3  # the channel of the first group whose weights, BatchNorm and readers are all zero
FIRST = "features.0"


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    model.head = nn.Linear(12, 4)
    with torch.no_grad():
        for bn in (model.features[1], model.features[4]):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
        model.features[0].weight[DEAD] = 0.0
        model.features[0].bias[DEAD] = 0.0
        model.features[1].weight[DEAD] = 0.0
        model.features[1].bias[DEAD] = 0.0
        model.features[3].weight[:, DEAD] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(32, 3, 8, 8, generator=generator)
    with torch.no_grad():
        labels = model(inputs).argmax(dim=1)  # a model that fits its data: removing channels can only hurt
    return model, graph, (inputs, labels)


CONFIG = SaliencyConfig(shapley_samples=3, shapley_batch=8, shapley_max_permutations=12, batch_size=16, max_batches=2)


@pytest.mark.parametrize("criterion", list_criteria())
def test_one_finite_score_per_channel(setup, criterion):
    model, graph, calib = setup
    scores = score_groups(model, graph, criterion, calib, CONFIG)
    assert set(scores) == {g.name for g in graph.groups} == {FIRST, "features.3"}
    for group in graph.groups:
        assert scores[group.name].shape == (group.width,)
        assert torch.isfinite(scores[group.name]).all()


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "taylor", "redundancy", "sensitivity", "composite"])
def test_dead_channel_is_ranked_last(setup, criterion):
    model, graph, calib = setup
    score = score_groups(model, graph, criterion, calib, CONFIG)[FIRST]
    assert int(torch.argmin(score)) == DEAD
    assert (score > score[DEAD]).sum() == score.numel() - 1  # strictly last, no tie


def test_shapley_gives_a_dead_channel_exactly_nothing_and_reports_its_cost(setup):
    model, graph, calib = setup
    scores, report = score_groups_report(model, graph, "shapley", calib, CONFIG)
    assert float(scores[FIRST][DEAD]) == 0.0  # its removal never changes the loss
    per_group = report["per_group"]
    assert report["permutations"] == sum(g["permutations"] for g in per_group.values())
    assert all(g["permutations"] % CONFIG.shapley_samples == 0 for g in per_group.values())  # whole rounds
    widths = sum(g.width for g in graph.groups)
    assert report["evaluations"] <= report["permutations"] * widths + 2 * len(graph.groups)
    assert report["forward_passes"] >= len(graph.groups)
    assert report["groups_converged"] + report["groups_hit_limit"] == len(graph.groups)
    assert report["seconds"] >= 0


def test_untruncated_shapley_values_add_up_to_the_whole_game(setup):
    """Efficiency (the first group is scored with the others whole): without truncation every permutation's
    marginals telescope to loss(empty) - loss(full)."""
    model, graph, (inputs, labels) = setup
    config = SaliencyConfig(shapley_samples=2, shapley_batch=8, shapley_truncation=0.0, shapley_max_permutations=4)
    scores = score_groups(model, graph, "shapley", (inputs, labels), config)
    x, y = inputs[:8], labels[:8]
    with torch.no_grad():
        reference = model(x)
        with batch_statistics(model):  # the game re-estimates BatchNorm per coalition, as after pruning
            full = float(task_loss(model(x), y, reference))
            with masked(graph, {FIRST: torch.zeros(8)}):
                empty = float(task_loss(model(x), y, reference))
    assert float(scores[FIRST].sum()) == pytest.approx(empty - full, abs=1e-4)


def test_random_is_seeded(setup):
    model, graph, calib = setup
    first = score_groups(model, graph, "random", None, SaliencyConfig(seed=3))
    second = score_groups(model, graph, "random", None, SaliencyConfig(seed=3))
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("criterion", ["taylor", "shapley", "sensitivity", "composite"])
def test_data_criteria_refuse_to_run_without_data(setup, criterion):
    model, graph, _ = setup
    with pytest.raises(ToolchainError, match=f"{criterion}.*needs calibration data"):
        score_groups(model, graph, criterion, None)


def test_unknown_criterion_lists_the_valid_ones(setup):
    model, graph, _ = setup
    with pytest.raises(ToolchainError, match="unknown criterion 'lamp'; valid: bn_scale, composite"):
        score_groups(model, graph, "lamp")


def test_scores_drive_the_shrink(setup):
    model, graph, calib = setup
    import copy

    pruned = copy.deepcopy(model)
    pruned_graph = PruningGraph(pruned, torch.randn(1, 3, 8, 8))
    scores = score_groups(pruned, pruned_graph, "sensitivity", calib)
    pruned_graph.shrink({FIRST: 7}, scores)  # dropping only the dead channel changes nothing
    with torch.no_grad():
        assert torch.allclose(pruned(calib[0]), model(calib[0]), atol=1e-5)
