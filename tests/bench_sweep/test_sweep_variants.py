"""The sweep benchmark's allocator variants live in folders beside the seed's rows and are read back as methods."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.budget_sweep import VARIANTS, collect_rows, variant_config
from toolchain.sweep import SweepConfig


def _write_rows(folder: Path, *allocators: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as handle:
        for allocator in allocators:
            handle.write(json.dumps({"key": f"0.5/taylor/{allocator}", "allocator": allocator}) + "\n")


def test_variant_rows_come_back_as_suffixed_methods(tmp_path):
    seed = tmp_path / "resnet56" / "seed3"
    _write_rows(seed, "lpnet", "uniform")
    _write_rows(seed / "corrected", "lpnet")
    _write_rows(seed / "rchecked", "knapsack")
    methods = sorted((r["method"], r["seed"]) for r in collect_rows(tmp_path / "resnet56"))
    assert methods == [("knapsack-rchecked", 3), ("lpnet", 3), ("lpnet-corrected", 3), ("uniform", 3)]


def test_a_variant_runs_in_its_own_folder_with_the_seed_dense_timing(tmp_path):
    (tmp_path / "sweep.json").write_text('{"dense_ms": 0.6}')
    config = SweepConfig(model="zoo:demo", out=tmp_path, budgets=(0.5,), allocators=("lpnet", "uniform"),
                         finetune_steps=30)
    checked = variant_config(config, ["lpnet"], "-rchecked")
    corrected = variant_config(config, ["knapsack"], "-corrected")
    assert (checked.out, checked.allocators, checked.check_recovery_steps) == (tmp_path / "rchecked", ("lpnet",), 30)
    assert corrected.correct_predictor and not corrected.check_recovery_steps
    assert (tmp_path / "rchecked" / "sweep.json").read_text() == '{"dense_ms": 0.6}'
    assert set(VARIANTS) == {"-corrected", "-rchecked", "-selected"}
