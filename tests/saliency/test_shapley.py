"""Adaptive Shapley: lockstep rounds equal one-at-a-time permutations, truncation, convergence and the limit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.saliency.test_criteria import DEAD, FIRST, setup  # noqa: F401  (setup is a fixture)
from toolchain.errors import ToolchainError
from toolchain.graph import PruningGraph
from toolchain.saliency import SaliencyConfig, ScoringContext, score_groups_report, shapley
from toolchain.saliency._masking import batch_statistics, calibration_batches, per_coalition_statistics
from toolchain.saliency.shapley import _new_game, boundary_separated, permutation_round


def _game(setup, name=FIRST, **config):  # noqa: F811
    model, graph, calib = setup
    config = SaliencyConfig(shapley_batch=8, **config)
    context = ScoringContext(model, graph, calibration_batches(calib, 16, 1), config)
    return _new_game(context, name), context


def test_lockstep_round_equals_permutations_one_at_a_time(setup):  # noqa: F811
    game, _ = _game(setup)
    orders = torch.stack([torch.randperm(game.width, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    together = permutation_round(game, orders, truncation=0.0)
    apart = torch.cat([permutation_round(game, orders[i:i + 1], truncation=0.0) for i in range(3)])
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-6)
    # Efficiency of each permutation: its marginals telescope to loss(empty) - loss(full).
    torch.testing.assert_close(together.sum(dim=1), torch.full((3,), game.empty_loss - game.full_loss),
                               rtol=1e-4, atol=1e-5)


def test_truncation_stops_a_permutation_near_the_empty_coalition(setup, monkeypatch):  # noqa: F811
    monkeypatch.setattr(shapley, "MAX_ROWS_PER_FORWARD", 16)  # two coalitions of 8 images per forward
    game, context = _game(setup, name="features.3")
    orders = torch.stack([torch.randperm(game.width, generator=torch.Generator().manual_seed(s)) for s in range(2)])
    context.cost.clear()
    untruncated = permutation_round(game, orders, truncation=0.0)
    full_cost = context.cost["evaluations"]
    context.cost.clear()
    truncated = permutation_round(game, orders, truncation=0.5)
    assert context.cost["evaluations"] < full_cost
    assert (truncated == 0).sum() > (untruncated == 0).sum()  # the tail of each permutation counts nothing
    gap = abs(game.empty_loss - game.full_loss)
    assert torch.all((truncated.sum(dim=1) - (game.empty_loss - game.full_loss)).abs() <= 0.5 * gap + 1e-6)


def test_a_zero_time_limit_stops_every_group_after_one_round(setup):  # noqa: F811
    model, graph, calib = setup
    config = SaliencyConfig(shapley_samples=2, shapley_batch=8, shapley_seconds=0.0)
    _, report = score_groups_report(model, graph, "shapley", calib, config)
    assert report["permutations"] == 2 * len(graph.groups)
    assert report["groups_hit_limit"] == len(graph.groups)
    assert {g["status"] for g in report["per_group"].values()} == {"hit_time_limit"}


def test_with_time_enough_groups_converge_before_the_permutation_cap(setup):  # noqa: F811
    model, graph, calib = setup
    config = SaliencyConfig(shapley_samples=2, shapley_batch=8, shapley_seconds=1e6, shapley_max_permutations=64,
                            shapley_clock="cpu")
    scores, report = score_groups_report(model, graph, "shapley", calib, config)
    assert report["groups_converged"] == len(graph.groups)
    for group in report["per_group"].values():
        assert group["status"] in ("stable", "separated")
        assert 2 <= group["permutations"] < 64
    assert float(scores[FIRST][DEAD]) == 0.0
    again, _ = score_groups_report(model, graph, "shapley", calib, config)  # seeded: the same estimate
    assert all(torch.equal(scores[k], again[k]) for k in scores)


def test_the_permutation_cap_bounds_a_group_that_never_settles(setup):  # noqa: F811
    model, graph, calib = setup
    config = SaliencyConfig(shapley_samples=1, shapley_batch=8, shapley_seconds=1e6, shapley_max_permutations=2,
                            shapley_stable_rounds=5)
    _, report = score_groups_report(model, graph, "shapley", calib, config)
    statuses = {g["status"] for g in report["per_group"].values()}
    assert statuses <= {"separated", "hit_permutation_cap"}
    assert all(g["permutations"] <= 2 for g in report["per_group"].values())


def test_boundary_separation_needs_intervals_apart():
    mean = torch.tensor([5.0, 4.0, 1.0, 0.0])
    assert boundary_separated(mean, torch.full((4,), 0.1), keep=2)
    assert not boundary_separated(mean, torch.full((4,), 1.0), keep=2)  # 4 - 1.96 < 1 + 1.96
    assert boundary_separated(mean, torch.full((4,), 10.0), keep=4)  # nothing pruned: nothing to separate


@pytest.mark.parametrize("field, value", [("shapley_samples", 0), ("shapley_seconds", -1.0),
                                          ("shapley_clock", "sundial"), ("shapley_max_permutations", 0)])
def test_bad_shapley_settings_are_refused(field, value):
    with pytest.raises(ToolchainError, match=field):
        SaliencyConfig(**{field: value})


class _Block(nn.Module):
    """A residual block whose one ReLU module is called twice (as torchvision's BasicBlock does)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def _residual_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _Block(8), _Block(8),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), _Block(16),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    return model.eval()


def test_the_replayed_prefix_gives_the_losses_of_a_full_forward():
    model = _residual_model()
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    inputs = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    context = ScoringContext(model, graph, calibration_batches(inputs, 8, 1), SaliencyConfig(shapley_batch=8))
    masks = torch.rand(5, 16, generator=torch.Generator().manual_seed(3)).round()
    replayed_somewhere = False
    for group in graph.groups:
        game = _new_game(context, group.name)
        replayed_somewhere |= game.prefix is not None
        with_prefix = game.losses(masks[:, :game.width])
        game.prefix = None
        torch.testing.assert_close(with_prefix, game.losses(masks[:, :game.width]), rtol=1e-5, atol=1e-6)
    assert replayed_somewhere
    assert all("forward" not in m.__dict__ for m in model.modules())  # every patched forward restored


def test_each_coalition_gets_its_own_batch_statistics(setup):  # noqa: F811
    model, _graph, (inputs, _labels) = setup
    first, second = inputs[:8], inputs[8:16] * 3.0 + 1.0  # two blocks with very different statistics
    with torch.no_grad():
        with batch_statistics(model):
            apart = torch.cat([model(first), model(second)])
        with per_coalition_statistics(model, rows=8):
            together = model(torch.cat([first, second]))
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert not any(m.training for m in model.modules())  # running statistics untouched, eval mode kept


def test_calibration_batches_sample_a_class_sorted_dataset_across_its_classes():
    labels = torch.arange(10).repeat_interleave(50)  # 500 images stored sorted by class, as MNIST-5k's splits
    dataset = torch.utils.data.TensorDataset(torch.randn(500, 1, 4, 4), labels)
    batches = calibration_batches(dataset, batch_size=16, max_batches=2)
    assert [x.shape[0] for x, _ in batches] == [16, 16]
    assert len(set(batches[0][1].tolist())) >= 5  # not the first 16 images (all of class 0)
    again = calibration_batches(dataset, batch_size=16, max_batches=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # the same images every time
