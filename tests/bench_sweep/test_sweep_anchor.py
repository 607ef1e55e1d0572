"""The sweep's Torch-Pruning anchor: stepped global pruning stops at the first model under each budget."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.sweep_anchor import AnchorConfig, run_anchor
from toolchain.data import DataSplits
from toolchain.op_count import count_macs_params


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)).eval()
    data = TensorDataset(torch.randn(60, 1, 8, 8), torch.randint(0, 3, (60,)))
    return model, torch.randn(1, 1, 8, 8), DataSplits(data, data, data)


def test_anchor_rows_meet_their_budgets_on_the_measurer():
    dense, x, data = _tiny()
    dense_macs = count_macs_params(dense, x)[0]
    calls = []

    def macs_ms(model, example):  # a deterministic stand-in for the target: MACs as a share of the dense model's
        calls.append(1)
        return count_macs_params(model, example)[0] / dense_macs

    for importance in ("magnitude", "taylor"):
        rows = run_anchor(dense, x, data, AnchorConfig(importance, steps=10, round_to=None), (0.4, 0.7, 0.01), 1.0,
                          macs_ms)
        reached = {r["budget_ratio"]: r for r in rows if r["error"] is None}
        assert set(reached) == {0.4, 0.7}
        assert all(r["measured_latency_ms"] <= r["budget_ratio"] for r in reached.values())
        assert reached[0.4]["tp_step"] > reached[0.7]["tp_step"]
        assert reached[0.7]["method"] == f"tp-{importance}" and reached[0.7]["accuracy_finetuned"] is None
        assert [r["budget_ratio"] for r in rows if r["error"]] == [0.01]  # 90 % global ratio cannot reach 1 %
    assert dense.state_dict()["0.weight"].shape[0] == 16  # the dense model is left whole


def test_anchor_never_prunes_a_layer_below_the_toolchains_floor():
    """Uncapped global magnitude empties the layers with small weights; the anchor keeps about 1 - layer_max_ratio.

    Torch-Pruning checks its cap before each step, so a layer can end up to one step's share under it."""
    dense, x, data = _tiny()
    with torch.no_grad():
        dense[3].weight.mul_(1e-3)  # the second conv's filters all score far below the first's
    kept = []

    def widths_ms(model, example):
        kept.append(min(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)))
        return 1.0

    run_anchor(dense, x, data, AnchorConfig("magnitude", steps=5, layer_max_ratio=0.75, round_to=None), (0.01,), 1.0,
               widths_ms)
    assert kept and min(kept) >= 3  # 16 channels, 75 % pruned = 4 kept, less one step's overshoot
    uncapped = []
    run_anchor(dense, x, data, AnchorConfig("magnitude", steps=5, layer_max_ratio=1.0, round_to=None), (0.01,), 1.0,
               lambda model, _: uncapped.append(min(m.out_channels for m in model.modules()
                                                    if isinstance(m, nn.Conv2d))) or 1.0)
    assert min(uncapped) == 1  # the test can fail: without the cap the weak layer is emptied


def test_anchor_keeps_channel_counts_at_the_hardware_multiple():
    dense, x, data = _tiny()
    widths = []

    def record_ms(model, example):
        widths.extend(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
        return 1.0

    run_anchor(dense, x, data, AnchorConfig("magnitude", steps=4, round_to=8), (0.01,), 1.0, record_ms)
    assert widths and set(widths) <= {8, 16}
    odd = []
    run_anchor(dense, x, data, AnchorConfig("magnitude", steps=4, round_to=None), (0.01,), 1.0,
               lambda model, _: odd.extend(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
               or 1.0)
    assert set(odd) - {8, 16}  # the test can fail: without round_to the widths are not multiples of 8
