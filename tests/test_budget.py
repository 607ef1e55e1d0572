"""The budget loop on the real demo model with a synthetic predictor and a fake (deterministic) target."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Subset

from toolchain.allocate import BudgetConfig
from toolchain.budget import PredictorInfo, prune_to_budget
from toolchain.budget_providers import BudgetProviders, using_providers
from toolchain.budget_trial import Trial
from toolchain.data import DataSplits, load_mnist5k
from toolchain.errors import ToolchainError
from toolchain.models import resolve_model

# demo groups: stem.0 32, layer1.0.conv1 32, layer2.0.conv1 64, layer2.0.downsample.0 64, layer3.0.conv1 128,
# layer3.0.downsample.0 128
COST_MS_PER_CHANNEL = {"stem.0": 0.02, "layer1.0.conv1": 0.01, "layer2.0.conv1": 0.01,
                       "layer2.0.downsample.0": 0.012, "layer3.0.conv1": 0.008, "layer3.0.downsample.0": 0.006}


class LinearLatency:
    differentiable = True

    def __init__(self, fixed_ms: float):
        self.fixed_ms = fixed_ms
        self.costs = torch.tensor(list(COST_MS_PER_CHANNEL.values()))

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        return self.fixed_ms + widths @ self.costs


def fake_target(fixed_ms: float):
    """Times a model as `fixed_ms` + per-channel costs of its actual widths; counts its calls."""
    calls = []

    def measure_ms(model, _example_input) -> float:
        calls.append(1)
        return fixed_ms + sum(cost * model.get_submodule(name).out_channels
                              for name, cost in COST_MS_PER_CHANNEL.items())

    return measure_ms, calls


def power_law_manifest_in_band(demo, budget_ratio: float, allocator: str) -> dict:
    """Prune on a target whose latency is not proportional to the linear prediction (1.6 x fake ** 1.2);
    the manifest, after checking that the measured latency landed in [0.9, 1] x budget."""
    model, x = demo
    base_measure, _ = fake_target(fixed_ms=0.3)
    result = prune_to_budget(model, x, BudgetConfig(budget_ratio=budget_ratio, criterion="l1", allocator=allocator),
                             predictor(0.1), lambda m, example_input: 1.6 * base_measure(m, example_input) ** 1.2)
    manifest = result.manifest
    assert 0.9 * manifest["budget_ms"] <= manifest["measured_latency_ms"] <= manifest["budget_ms"]
    return manifest


@pytest.fixture(scope="module")
def demo():
    model, inputs = resolve_model("zoo:demo")
    return model, torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(0))


def predictor(fixed_ms: float = 0.1) -> PredictorInfo:
    return PredictorInfo(LinearLatency(fixed_ms), "synthetic", None, {})


def fake_providers(measure_ms, label: str = "cpu/fake/1t") -> BudgetProviders:
    """A synthetic predictor and a fake target as a budget run's providers."""
    return BudgetProviders(lambda *_args: predictor(0.1), measure_ms, label)


def measured(measured_ms: float, predictor_ms: float, widths: dict[str, int]) -> Trial:
    """An earlier trial of the search, as the helpers of toolchain.budget_search see it."""
    return Trial(widths, "allocator:test", aim_ms=0.0, predictor_ms=predictor_ms, predicted_ms=predictor_ms,
                 measured_ms=measured_ms)


def test_misses_are_tightened_until_the_measured_latency_meets_the_budget(demo):
    model, x = demo
    measure_ms, calls = fake_target(fixed_ms=1.0)  # the target has a larger fixed cost than predicted
    result = prune_to_budget(model, x, BudgetConfig(budget_ratio=0.5, criterion="l1", allocator="knapsack"),
                             predictor(0.1), measure_ms)
    manifest = result.manifest
    assert 0.9 * manifest["budget_ms"] <= manifest["measured_latency_ms"] <= manifest["budget_ms"]
    assert manifest["budget_met"] is True
    assert len(manifest["iterations"]) >= 2  # the first aim missed and was tightened
    over_budget = sum(it["measured_ms"] > manifest["budget_ms"] for it in manifest["iterations"])
    assert len(calls) == 1 + len(manifest["iterations"]) + over_budget  # the dense model, each try, re-timings
    for key in ("budget_ms", "predicted_latency_ms", "measured_latency_ms", "dense_latency_ms", "criterion",
                "allocator", "per_layer_widths", "predictor"):
        assert key in manifest
    assert manifest["per_layer_widths"] == result.widths
    assert all(w % 8 == 0 and w >= 8 for w in result.widths.values())


@pytest.mark.parametrize("allocator", ["lpnet", "uniform"])
def test_budget_in_ms_is_met(demo, allocator):
    model, x = demo
    measure_ms, _ = fake_target(fixed_ms=0.1)
    result = prune_to_budget(model, x, BudgetConfig(budget_ms=3.0, criterion="l2", allocator=allocator),
                             predictor(0.1), measure_ms)
    assert result.manifest["measured_latency_ms"] <= 3.0


def test_once_measurements_bracket_the_band_the_next_try_lies_between_them(demo):
    """With a power-law target the MACs baseline alternates between global thresholds above and below the band
    (1.01 and 0.44 x budget: re-allocating for a rescaled target never lands between them); walking from the
    lower measured model toward the upper one does."""
    manifest = power_law_manifest_in_band(demo, budget_ratio=0.35, allocator="macs")
    assert manifest["iterations"][-1].get("bracketed") is True


def test_the_walk_between_measured_models_interpolates_one_group_step_at_a_time():
    from toolchain.allocate import AllocationProblem, GroupChoice
    from toolchain.budget_search import between_measured

    groups = (GroupChoice("a", 64, 8, 8), GroupChoice("b", 32, 8, 8))
    problem = AllocationProblem(groups, curves={}, latency=None)
    low, high = {"a": 16, "b": 8}, {"a": 48, "b": 24}  # a: 4 steps up, b: 2 steps up
    config = BudgetConfig(budget_ms=1.0)
    between = between_measured(problem, config, 1.0, [measured(0.8, 0.0, low), measured(1.2, 0.0, high)])
    # aim 0.95 ms is 37.5% of the way from 0.8 to 1.2 ms: 2 of the 6 steps, one of each group (b's first step
    # sits at a quarter of the path, a's first at an eighth)
    assert between == {"a": 24, "b": 16}
    # a disturbed timing of the secant's point (1.5 ms, above the band) does not end the walk: the untried
    # point nearest to it comes next
    disturbed = [measured(0.8, 0.0, low), measured(1.2, 0.0, high), measured(1.5, 0.0, between)]
    assert between_measured(problem, config, 1.0, disturbed) == {"a": 24, "b": 8}
    # a point of the walk measured below its lower end becomes the new lower end (latency is not monotone
    # along a walk; keeping the slower end made walks stall next to their first secant point)
    dipped = [measured(0.8, 0.0, low), measured(1.2, 0.0, high), measured(0.7, 0.0, {"a": 24, "b": 16})]
    assert between_measured(problem, config, 1.0, dipped) == {"a": 40, "b": 16}
    # and a point measured above the band, but slower than the upper end, becomes the new upper end
    peaked = [measured(0.8, 0.0, low), measured(1.2, 0.0, high), measured(1.25, 0.0, {"a": 32, "b": 16})]
    assert between_measured(problem, config, 1.0, peaked) == {"a": 24, "b": 8}
    assert between_measured(problem, config, 1.0, [measured(0.8, 0.0, low)]) is None  # nothing above the band yet
    assert between_measured(problem, config, 1.0,
                            [measured(0.8, 0.0, low), measured(1.2, 0.0, {"a": 24, "b": 8})]) is None


def test_the_nearest_untried_neighbour_pays_for_a_step_up_with_a_step_down():
    from toolchain.allocate import AllocationProblem, GroupChoice
    from toolchain.budget_search import nearest_untried

    class Linear:
        differentiable = True

        def ms_batch(self, widths):
            return widths @ torch.tensor([0.02, 0.005])

    groups = (GroupChoice("a", 64, 8, 8), GroupChoice("b", 32, 8, 8))
    problem = AllocationProblem(groups, curves={"a": torch.zeros(65), "b": torch.zeros(33)}, latency=Linear())
    config = BudgetConfig(budget_ms=1.0)
    # predicted 0.72 ms, measured 0.85 (calibration x1.18): a up one step overshoots (1.04 ms), b up one step
    # falls short (0.897 ms); a up and b down lands in the band (0.99 ms)
    trials = [measured(0.85, 0.72, {"a": 32, "b": 16})]
    assert nearest_untried(problem, config, 1.0, trials) == {"a": 40, "b": 8}
    # once that was measured (and missed), the untried neighbour predicted nearest the aim (0.95 ms)
    trials.append(measured(0.85, 0.84, {"a": 40, "b": 8}))
    assert nearest_untried(problem, config, 1.0, trials) == {"a": 32, "b": 24}


def test_a_model_measured_over_budget_is_timed_again_before_the_miss_counts(demo):
    model, x = demo
    quiet_ms, calls = fake_target(fixed_ms=0.1)  # the predictor is exact: the first allocation lands in band
    seen = set()

    def first_timing_disturbed(m, example_input):
        ms = quiet_ms(m, example_input)
        if ms not in seen:
            seen.add(ms)
            return 1.5 * ms if len(seen) > 1 else ms  # the dense model is timed quietly
        return ms

    result = prune_to_budget(model, x, BudgetConfig(budget_ratio=0.5, criterion="l1", allocator="knapsack"),
                             predictor(0.1), first_timing_disturbed)
    manifest = result.manifest
    assert 0.9 * manifest["budget_ms"] <= manifest["measured_latency_ms"] <= manifest["budget_ms"]
    assert len(manifest["iterations"]) == 1 and len(calls) == 3  # dense, the try, its second timing


def test_unreachable_budget_names_the_narrowest_measured_latency(demo):
    model, x = demo
    measure_ms, _ = fake_target(fixed_ms=1.0)
    timed = []  # the widths of every model timed

    def recording(m, example_input):
        timed.append(tuple(m.get_submodule(name).out_channels for name in COST_MS_PER_CHANNEL))
        return measure_ms(m, example_input)

    with pytest.raises(ToolchainError, match=r"unreachable.*narrowest allowed model measures \d+\.\d+ ms"):
        prune_to_budget(model, x, BudgetConfig(budget_ms=1.2, criterion="l1", allocator="knapsack",
                                               unreachable_pause_s=0.0), predictor(0.1), recording)
    # the verdict rests on four timings of the narrowest model: the first, one at once, two after pauses
    assert len(set(timed[-4:])) == 1 and timed[-5] != timed[-1]


def test_one_disturbed_timing_of_the_narrowest_model_does_not_make_a_budget_unreachable(demo):
    model, x = demo
    quiet_ms, calls = fake_target(fixed_ms=0.1)
    narrowest_timings = []

    def measure_ms(m, example_input):
        ms = quiet_ms(m, example_input)
        if m.get_submodule("stem.0").out_channels == 8:  # the narrowest model: its first timing is disturbed
            narrowest_timings.append(ms)
            return ms * (2.0 if len(narrowest_timings) == 1 else 1.0)
        return ms

    # Budget = the narrowest model's quiet latency (every group at 25%: 8/8/16/16/32/32 channels), so the
    # loop goes straight to the narrowest model, whose first timing says "unreachable".
    dense_widths = {"stem.0": 32, "layer1.0.conv1": 32, "layer2.0.conv1": 64, "layer2.0.downsample.0": 64,
                    "layer3.0.conv1": 128, "layer3.0.downsample.0": 128}
    budget_ms = 0.1 + sum(COST_MS_PER_CHANNEL[n] * (w // 4) for n, w in dense_widths.items()) + 1e-6
    result = prune_to_budget(model, x, BudgetConfig(budget_ms=budget_ms, criterion="l1", allocator="knapsack",
                                                    min_keep_ratio=0.25), predictor(0.1), measure_ms)
    assert len(narrowest_timings) >= 2
    assert result.manifest["measured_latency_ms"] <= budget_ms


def test_with_data_the_manifest_has_accuracies_and_recovery(demo):
    model, x = demo
    splits = load_mnist5k()
    small = DataSplits(Subset(splits.train, range(256)), Subset(splits.calib, range(64)),
                       Subset(splits.test, range(200)))
    measure_ms, _ = fake_target(fixed_ms=0.1)
    config = BudgetConfig(budget_ratio=0.7, criterion="taylor", allocator="knapsack", refine_rounds=1, finetune_steps=2)
    result = prune_to_budget(model, x, config, predictor(0.1), measure_ms, data=small)
    manifest = result.manifest
    assert manifest["dense_accuracy"] > 0.9
    assert 0.0 <= manifest["accuracy_before_recovery"] <= 1.0
    assert 0.0 <= manifest["accuracy"] <= 1.0 and manifest["finetune_steps"] == 2
    check = manifest["iterations"][-1]["calibration_check"]
    assert check["refined_loss"] <= min(check["losses"].values())
    # Candidates: the proposal, uniform, their blends, and one global score threshold; the lowest loss won.
    assert set(check["losses"]) == {"1.0", "0.75", "0.5", "0.25", "0.0", "global"}
    assert check["losses"][check["chosen"]] == min(check["losses"].values())
    assert manifest["saliency"]["criterion"] == "taylor"
    assert set(manifest["wall_s"]) >= {"saliency", "allocate_and_measure", "recover"}


@pytest.fixture
def fake_budget_backend():
    """The CLI's budget path with a synthetic predictor and a deterministic fake target."""
    measure_ms, _ = fake_target(fixed_ms=0.1)
    with using_providers(fake_providers(measure_ms)):
        yield


def test_a_budget_job_runs_on_the_providers_it_is_given(demo):
    from toolchain.budget import BudgetJob

    model, x = demo
    measure_ms, calls = fake_target(fixed_ms=0.1)
    job = BudgetJob(BudgetConfig(budget_ms=2.5, criterion="l1", allocator="uniform"),
                    providers=fake_providers(measure_ms, label="board/fake"))
    manifest = job.run("zoo:demo", model, x, None, lambda _: None).manifest
    assert manifest["latency_target"]["label"] == "board/fake"
    assert manifest["measured_latency_ms"] <= 2.5 and len(calls) == 1 + len(manifest["iterations"])


def test_cli_prune_with_a_budget_writes_the_latency_fields(tmp_path, capsys, fake_budget_backend):
    from toolchain.cli import main

    out = tmp_path / "pruned"
    code = main(["prune", "--model", "zoo:demo", "--budget-ms", "2.5", "--criterion", "l1", "--allocator", "uniform",
                 "--data", "none", "--out", str(out), "--json"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["budget_ms"] == 2.5 and manifest["measured_latency_ms"] <= 2.5
    assert manifest["criterion"] == "l1" and manifest["allocator"] == "uniform"
    assert manifest["latency_target"]["label"] == "cpu/fake/1t"
    assert json.loads(capsys.readouterr().out)["per_layer_widths"] == manifest["per_layer_widths"]


@pytest.mark.parametrize("args, message", [
    (["--budget-ms", "1", "--budget-ratio", "0.5"], "exactly one of --budget-ms or --budget-ratio"),
    (["--budget-ratio", "1.5"], "'--budget-ratio': 1.5 is not in the range 0.0<x<=1.0"),
    (["--budget-ms", "0.05"], "unreachable"),
])
def test_cli_prune_rejects_bad_budgets_in_one_line(tmp_path, capsys, fake_budget_backend, args, message):
    from toolchain.cli import main

    code = main(["prune", "--model", "zoo:demo", "--criterion", "l1", "--allocator", "knapsack", "--data", "none",
                 "--out", str(tmp_path / "p"), "--json", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_miss_is_refined_next_to_the_measured_model_and_lands_in_the_band(demo):
    """The target's latency is not proportional to the prediction (a power law): the first try, aimed through
    the dense model's calibration, lands below the band; the next is the measured model with a few groups
    stepped up (calibrated at that point), not a fresh allocation, and lands in the band."""
    manifest = power_law_manifest_in_band(demo, budget_ratio=0.6, allocator="knapsack")
    assert manifest["iterations"][0]["measured_ms"] < 0.9 * manifest["budget_ms"]
    assert [i.get("refined", False) for i in manifest["iterations"]] == [False, True]


def test_baselines_are_refined_only_once_measurements_bracket_the_band():
    from toolchain.allocate import AllocationProblem, GroupChoice
    from toolchain.budget_search import refinement

    groups = (GroupChoice("stem.0", 32, 8, 8), GroupChoice("layer1.0.conv1", 32, 8, 8))
    curves = {g.name: torch.linspace(1.0, 0.0, g.dense_width + 1) for g in groups}

    class TwoGroupLatency:
        differentiable = True

        def ms_batch(self, widths):
            return 0.1 + widths @ torch.tensor([0.02, 0.005])

    problem = AllocationProblem(groups, curves, TwoGroupLatency())
    config = BudgetConfig(budget_ms=1.0, allocator="macs")
    # below the band at 16/16 (0.50 ms predicted), above it at 24/16 (0.66 ms): adjacent, nothing between
    trials = [measured(0.85, 0.50, {"stem.0": 16, "layer1.0.conv1": 16}),
              measured(1.1, 0.66, {"stem.0": 24, "layer1.0.conv1": 16})]
    assert refinement(problem, config, 1.0, trials) is None  # a baseline keeps its own rule...
    refined = refinement(problem, config, 1.0, trials, bracketed=True)  # ...until the bracket is exhausted
    # calibrated at the measured 0.85 ms, the aim (0.95 ms) is 0.559 predicted ms: one step of the cheap group
    assert refined == {"stem.0": 16, "layer1.0.conv1": 24}


def test_cli_prune_with_correct_predictor_allocates_again_on_the_corrected_predictor(tmp_path, capsys):
    """The power-law target of `power_law_manifest_in_band`: the first allocation misses the band; with
    --correct-predictor the next try is the allocator's again, on the predictor corrected by that miss."""
    from toolchain.cli import main

    base_measure, _ = fake_target(fixed_ms=0.3)
    with using_providers(fake_providers(lambda m, x: 1.6 * base_measure(m, x) ** 1.2)):
        code = main(["prune", "--model", "zoo:demo", "--budget-ratio", "0.6", "--criterion", "l1", "--allocator",
                     "knapsack", "--correct-predictor", "--data", "none", "--out", str(tmp_path / "p"), "--json"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    tries = manifest["iterations"]
    assert tries[0]["measured_ms"] < 0.9 * manifest["budget_ms"] and "corrected" not in tries[0]
    assert tries[1].get("corrected") is True
    assert 0.9 * manifest["budget_ms"] <= manifest["measured_latency_ms"] <= manifest["budget_ms"]


def test_cli_prune_can_ship_the_uniform_model_where_it_recovers_better(tmp_path, capsys):
    """--select-after-recovery: the uniform allocation is searched too; the manifest says which model was kept."""
    from toolchain.cli import main

    base_measure, _ = fake_target(fixed_ms=0.3)
    with using_providers(fake_providers(base_measure)):
        code = main(["prune", "--model", "zoo:demo", "--budget-ratio", "0.6", "--criterion", "l1", "--allocator",
                     "knapsack", "--select-after-recovery", "2", "--finetune-steps", "1", "--out",
                     str(tmp_path / "p"), "--json"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    selection = manifest["recovered_selection"]
    assert set(selection["candidates"]) == {"knapsack", "uniform"} and selection["distillation_steps"] == 2
    chosen = selection["candidates"][selection["chosen"]]
    assert chosen["measured_ms"] == manifest["measured_latency_ms"] <= manifest["budget_ms"]



def test_budget_runs_select_after_recovery_by_default():
    """On by default where there is a train split, in the library and in prune/deploy (`--select-after-recovery 0`
    ships the allocator's model unchecked; the selection itself is tested above)."""
    from toolchain.allocate import BudgetConfig
    from toolchain.cli import cli

    assert BudgetConfig(budget_ratio=0.5).recovered_selection_steps == 30
    from toolchain.sweep import SweepConfig

    def default(command: str) -> int:
        return next(p for p in cli.commands[command].params if p.name == "select_after_recovery").default

    assert default("prune") == default("deploy") == 30
    # a sweep's methods are the plain allocators unless asked (its `-selected` variants are separate methods)
    assert default("sweep") == SweepConfig.recovered_selection_steps == 0
