"""Sweeps: budget parsing, one row per point, resumption after an interruption, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.test_budget import fake_providers, fake_target
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.sweep import SweepConfig, parse_budgets, read_rows, run_sweep


def test_parse_budgets():
    assert parse_budgets("0.3:0.9:0.1") == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert parse_budgets("0.5,0.7") == (0.5, 0.7)
    for bad in ("0.3:x:0.1", "0:0.5:0.5", "1.5"):
        with pytest.raises(ToolchainError, match="--budgets"):
            parse_budgets(bad)


def _config(out, measure_ms) -> SweepConfig:
    return SweepConfig(model="zoo:demo", out=out, budgets=(0.5, 0.8), criteria=("l1", "random"),
                       allocators=("uniform", "knapsack"), data="none", providers=fake_providers(measure_ms))


def test_sweep_resumes_after_an_interruption(tmp_path):
    measure_ms, _ = fake_target(fixed_ms=0.1)
    calls = []

    def interrupted(model, x):
        calls.append(1)
        if len(calls) == 5:  # the dense model + a few points, then the process "dies"
            raise KeyboardInterrupt
        return measure_ms(model, x)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(_config(tmp_path, interrupted))
    first = {row["key"]: row for row in read_rows(tmp_path)}
    assert 0 < len(first) < 8

    resumed_measure, resumed_calls = fake_target(fixed_ms=0.1)
    rows = run_sweep(_config(tmp_path, resumed_measure))
    assert len(rows) == 8  # 2 budgets x 2 criteria x 2 allocators, each once
    assert len({row["key"] for row in rows}) == 8
    for key, row in first.items():  # finished points were not run again
        assert next(r for r in rows if r["key"] == key)["point_s"] == row["point_s"]
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 8
    assert len(resumed_calls) == sum(r["iterations"] for r in rows if r["key"] not in first)  # dense not re-measured
    table = json.loads((tmp_path / "rows.json").read_text())
    assert (tmp_path / "rows.csv").read_text().count("\n") == 9
    for row in table:
        assert row["error"] is None
        assert row["measured_latency_ms"] <= row["budget_ms"]
        assert {"predicted_latency_ms", "macs", "params", "saliency_s", "recover_s"} <= set(row)


@pytest.mark.parametrize("cut_at", ["mid-row", "before the newline"])
def test_a_row_torn_by_a_kill_is_repaired_and_the_resumed_sweep_appends_cleanly(tmp_path, cut_at):
    measure_ms, _ = fake_target(fixed_ms=0.1)
    run_sweep(_config(tmp_path, measure_ms))
    path = tmp_path / "rows.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    last = lines[-1]
    torn = last[: len(last) // 2] if cut_at == "mid-row" else last[:-1]
    path.write_bytes(b"".join(lines[:-1]) + torn)
    notes = []
    rows = run_sweep(_config(tmp_path, measure_ms), step=notes.append)
    assert len(rows) == 8 and all(row["error"] is None for row in rows)
    assert all(json.loads(line) for line in path.read_text().splitlines()), "every line is a whole row"
    assert len(path.read_text().splitlines()) == 8
    assert any("rows.jsonl" in note and ("dropped" if cut_at == "mid-row" else "line end") in note for note in notes)


def test_sweep_refuses_another_model_in_the_same_folder(tmp_path):
    measure_ms, _ = fake_target(fixed_ms=0.1)
    config = SweepConfig(model="zoo:demo", out=tmp_path, budgets=(0.8,), criteria=("l1",), allocators=("uniform",),
                         data="none", providers=fake_providers(measure_ms))
    run_sweep(config)
    with pytest.raises(ToolchainError, match="another model"):
        run_sweep(replace(config, model="zoo:resnet56_cifar"))


@pytest.mark.parametrize("args, message", [
    (["--criteria", "l1,magic"], "unknown criterion 'magic'"),
    (["--allocators", "greedy"], "unknown allocator 'greedy'"),
    (["--budgets", "2:3:1"], "every budget ratio"),
])
def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys, args, message):
    assert main(["sweep", "--model", "zoo:demo", "--out", str(tmp_path / "s"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_reseeded_draws_calibration_and_order_by_seed_and_keeps_the_test_split():
    import torch
    from torch.utils.data import TensorDataset

    from toolchain.data import DataSplits
    from toolchain.sweep import reseeded

    def ids(dataset):
        return sorted(int(dataset[i][1]) for i in range(len(dataset)))

    splits = DataSplits(TensorDataset(torch.zeros(30, 1), torch.arange(30)),
                        TensorDataset(torch.zeros(10, 1), torch.arange(30, 40)),
                        TensorDataset(torch.zeros(5, 1), torch.arange(40, 45)))
    one, again, two = reseeded(splits, 1), reseeded(splits, 1), reseeded(splits, 2)
    assert (len(one.train), len(one.calib)) == (30, 10)
    assert sorted(ids(one.train) + ids(one.calib)) == list(range(40))  # the same images, split anew
    assert ids(one.calib) != list(range(30, 40))
    assert ids(one.calib) == ids(again.calib) and ids(one.calib) != ids(two.calib)
    assert one.test is splits.test


def test_a_sweep_meets_its_budgets_on_the_statistic_asked_for_and_its_rows_name_it(tmp_path):
    measure_ms, _ = fake_target(fixed_ms=0.1)
    config = replace(_config(tmp_path, measure_ms), criteria=("l1",), allocators=("uniform",), budgets=(0.8,),
                     budget_statistic="p90")
    (row,) = run_sweep(config)
    assert row["error"] is None
    assert row["measured_statistic"] == "p90"
    with pytest.raises(ToolchainError, match="budget statistic"):
        run_sweep(replace(config, out=tmp_path / "other", budget_statistic="mean"))
