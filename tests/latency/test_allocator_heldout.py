"""The predictor held to what it is used for: allocator-produced configurations generated, timed into the
campaign's database, held out by the fit and scored apart."""

import dataclasses
from pathlib import Path

import pytest
import torch
from latency_synthetic import synthetic_rows, write_synthetic_db

from toolchain.errors import ToolchainError
from toolchain.latency.allocator_sampling import AllocatorGrid, allocator_configs
from toolchain.latency.campaign import CampaignConfig, run_campaign
from toolchain.latency.fitting import FitConfig, fit_predictor, split_rows
from toolchain.latency.given_configs import time_given_configs
from toolchain.latency.measure import MeasureConfig
from toolchain.latency.predictors import load_predictor
from toolchain.latency.sampling import SampledConfig, is_allocator_tag
from toolchain.latency.store import MeasurementStore

TINY = str(Path(__file__).with_name("tiny_model.py")) + ":factory"
TINY_SHAPE = (1, 3, 16, 16)
QUICK = MeasureConfig(warmup_runs=1, timed_runs=3, max_attempts=1, min_timed_ms=0.0)


class LinearLatency:
    """A differentiable stand-in for an lpnet predictor over the tiny model's groups (stem, conv1)."""

    differentiable = True

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        return 0.1 + (widths * torch.tensor([0.01, 0.02])).sum(1)


def _tiny():
    from tiny_model import factory

    torch.manual_seed(0)  # l1 scores depend on the weights
    return factory(), torch.randn(1, 3, 16, 16)


def test_every_allocator_gives_widths_on_its_multiple_within_budget():
    model, x = _tiny()
    grid = AllocatorGrid(round_tos=(1, 8), budget_ratios=(0.4, 0.7))
    configs = allocator_configs(model, x, LinearLatency(), grid)
    tags = [c.tag for c in configs]
    assert all(is_allocator_tag(t) for t in tags)
    assert {t.split(":")[1] for t in tags} == {"lpnet", "knapsack", "uniform", "macs"}
    assert len({tuple(sorted(c.widths.items())) for c in configs}) == len(configs)  # distinct
    dense = {"stem": 16, "conv1": 24}
    dense_ms = float(LinearLatency().ms_batch(torch.tensor([[16.0, 24.0]]))[0])
    for config in configs:
        _, allocator, round_to, budget = config.tag.split(":")
        step, ratio = int(round_to[1:]), float(budget[1:])
        assert all(w % step == 0 or w == dense[g] for g, w in config.widths.items()), config
        predicted = float(LinearLatency().ms_batch(torch.tensor([[config.widths["stem"], config.widths["conv1"]]],
                                                                dtype=torch.float32))[0])
        if allocator != "macs":  # macs meets a MAC fraction, not the prediction
            assert predicted <= ratio * dense_ms + 1e-6, config


def test_the_same_model_and_grid_give_the_same_configurations():
    grid = AllocatorGrid(allocators=("knapsack", "uniform"), round_tos=(8,), budget_ratios=(0.5,))
    first = allocator_configs(*_tiny(), LinearLatency(), grid)
    assert allocator_configs(*_tiny(), LinearLatency(), grid) == first


def test_a_grid_with_a_budget_outside_0_1_is_refused():
    with pytest.raises(ToolchainError, match="budget ratios"):
        AllocatorGrid(budget_ratios=(1.5,))


def test_given_configurations_join_the_campaigns_database_with_their_tags(tmp_path):
    config = CampaignConfig(model=TINY, input_shape=TINY_SHAPE, db_path=str(tmp_path / "m.db"), samples=3,
                            measure=QUICK)
    run_campaign(config)
    given = [SampledConfig("alloc:uniform:r1:b0.50", {"stem": 9, "conv1": 13}),  # no sampled one is alike
             SampledConfig("alloc:knapsack:r1:b0.50", {"stem": 15, "conv1": 7})]
    report = time_given_configs(config, given)
    assert report.failed == [] and report.measured == 2
    with MeasurementStore(config.db_path) as store:
        rows = store.rows(model=TINY)
    tagged = {r.sample_tag: r for r in rows if is_allocator_tag(r.sample_tag)}
    assert set(tagged) == {g.tag for g in given}
    assert tagged["alloc:uniform:r1:b0.50"].widths == {"stem": 9, "conv1": 13}
    assert all(r.min_ms > 0 and r.replicate == 0 for r in tagged.values())
    assert len({r.fingerprint_id for r in rows}) == 1  # same machine and clock as the campaign's rows
    again = time_given_configs(config, given)
    assert again.measured == 0 and again.skipped == 2


def _with_allocator_rows(rows, every: int = 3):
    """Every `every`-th non-dense row re-tagged as allocator-produced."""
    return [dataclasses.replace(r, sample_tag=f"alloc:knapsack:r8:b{i / 100:.2f}") if i % every == 1 else r
            for i, r in enumerate(rows)]


def test_allocator_configurations_are_held_out_apart_and_never_trained_on(tmp_path):
    rows = _with_allocator_rows(synthetic_rows(120))
    db = write_synthetic_db(tmp_path / "m.db", rows)
    config = FitConfig(str(db), "macs", models=("synthetic:net",), statistic="median")
    split = split_rows(rows, config)
    allocated = {r.config_key for r in rows if is_allocator_tag(r.sample_tag)}
    held = {q.config_key for q in split.allocator_heldout}
    assert held and held <= allocated
    assert not held & {q.config_key for q in split.train}
    assert not held & {q.config_key for q in split.heldout}
    assert 0 < split.n_allocator_train < len(allocated)
    predictor = fit_predictor(config)
    assert predictor.meta.allocator_heldout_metrics["n"] == len(held)
    assert predictor.meta.n_allocator_train == split.n_allocator_train
    assert predictor.meta.heldout_metrics["n"] == len(split.heldout)
    predictor.save(tmp_path / "artifact")
    assert load_predictor(tmp_path / "artifact").meta.allocator_heldout_metrics == \
        predictor.meta.allocator_heldout_metrics


def test_a_fit_can_leave_allocator_configurations_out_of_training(tmp_path):
    rows = _with_allocator_rows(synthetic_rows(60))
    db = write_synthetic_db(tmp_path / "m.db", rows)
    config = FitConfig(str(db), "macs", models=("synthetic:net",), statistic="median",
                       train_on_allocator_configs=False)
    predictor = fit_predictor(config)
    assert predictor.meta.n_allocator_train == 0
    assert predictor.meta.allocator_heldout_metrics["n"] == len(split_rows(rows, config).allocator_heldout)


def test_a_database_without_allocator_configurations_records_no_such_score(synthetic_db):
    predictor = fit_predictor(FitConfig(str(synthetic_db), "macs", models=("synthetic:net",), statistic="median"))
    assert predictor.meta.allocator_heldout_metrics == {} and predictor.meta.n_allocator_train == 0


def test_lpnet_reads_a_configurations_macs_off_its_channel_maps(synthetic_db):
    from latency_synthetic import synthetic_layers

    from toolchain.latency.allocator_sampling import lpnet_macs_counter
    from toolchain.latency.features import total_macs

    predictor = fit_predictor(FitConfig(str(synthetic_db), "lpnet", models=("synthetic:net",), statistic="median",
                                        train_steps=5))
    macs = lpnet_macs_counter(predictor)
    for widths in ({"stem": 32, "block1": 64, "block2": 128}, {"stem": 5, "block1": 17, "block2": 99}):
        assert macs(widths) == pytest.approx(total_macs(synthetic_layers(widths)), rel=1e-4)


def test_docstring_examples():
    import doctest

    import toolchain.latency.allocator_sampling as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
