"""Readers: each input kind is recognised from its files and fields; bad files are listed, not guessed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.errors import ToolchainError
from toolchain.manifest import MANIFEST_VERSION
from toolchain.report import read_inputs
from toolchain.report.records import sweep_point


def test_full_run_reads_every_kind(full_run: Path):
    inputs = read_inputs([full_run])
    assert sorted(m.target for m in inputs.manifests) == ["cpu", "jetson-orin"]
    assert len(inputs.sweep_points) == 7  # from the JSON; its CSV twin is not read twice
    assert {p.source for p in inputs.sweep_points} == {"full/runs/sweep/sweep-fixture.json"}
    (bench,) = inputs.predictor_benchmarks
    assert [(s.predictor, s.scope) for s in bench.scores] == [
        ("lpnet", "held-out configurations"), ("macs", "held-out configurations"),
        ("layerwise", "unseen architecture")]
    assert bench.scores[0].mape_pct == pytest.approx(3.9) and len(bench.scores[0].measured_ms) == 6
    assert bench.method.warmup_runs == 3 and bench.method.timed_runs == 15 and bench.method.clock == "thread_cpu"
    (kernels,) = inputs.kernel_benchmarks
    assert len(kernels.rows) == 10 and kernels.method.timed_runs == 5
    (db,) = inputs.databases
    assert len(db.configs) == 2 and len(db.single_op_ms) == 5
    assert db.method.timed_runs == 15 and "1 re-measurements" in db.method.noise_floor
    assert not inputs.unreadable and not inputs.unrecognised  # arch.json belongs to a pruned folder
    # The predictor benchmark and the database name the same fingerprint id; they share one entry.
    assert "fixture0000000001" in inputs.fingerprints and len(inputs.fingerprints) == 5


def test_sweep_fields_map_through_the_column_table():
    point = sweep_point({"budget": "2.0", "measured_ms": "2.5", "predicted_ms": "", "accuracy": "0.9",
                         "allocator": "uniform", "allocate_wall_s": "1.5", "wall_s": {"recover": 3}}, "s.csv")
    assert (point.budget_ms, point.measured_latency_ms, point.predicted_latency_ms) == (2.0, 2.5, None)
    assert point.hit_budget is False and point.accuracy == 0.9 and point.criterion is None
    assert point.stage_wall_s == {"allocate": 1.5, "recover": 3.0}
    assert sweep_point({"budget_ms": 1.0}, "s.json").hit_budget is None  # not measured: neither hit nor miss


def test_csv_sweep_without_json_twin_is_read(full_run: Path):
    sweep = full_run / "runs" / "sweep"
    (sweep / "sweep-fixture.json").unlink()
    points = read_inputs([sweep]).sweep_points
    assert len(points) == 7 and points[0].budget_ms == 0.3 and points[-1].measured_latency_ms is None


def test_corrupt_file_in_a_folder_is_listed_not_fatal(partial_run: Path):
    inputs = read_inputs([partial_run])
    assert [s.path for s in inputs.unreadable] == ["partial/runs/broken/manifest.json"]
    assert "JSONDecodeError" in inputs.unreadable[0].reason
    assert [s.path for s in inputs.unrecognised] == ["partial/runs/notes.json"]
    assert len(inputs.manifests) == 1 and inputs.manifests[0].widths is None


def test_corrupt_database_is_listed_not_fatal(tmp_path: Path):
    (tmp_path / "latency.db").write_bytes(b"this is not an SQLite file" * 40)
    inputs = read_inputs([tmp_path])
    assert [s.path for s in inputs.unreadable] == [f"{tmp_path.name}/latency.db"]


@pytest.mark.parametrize("content, message", [('{"model": ', "cannot read"),
                                              ('{"hello": 1}', "not a toolchain output")])
def test_bad_file_given_directly_is_a_one_line_error(tmp_path: Path, content: str, message: str):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ToolchainError, match=message) as error:
        read_inputs([path])
    assert "\n" not in str(error.value)


def test_missing_path_is_an_error(tmp_path: Path):
    with pytest.raises(ToolchainError, match="does not exist"):
        read_inputs([tmp_path / "nowhere"])


def test_manifest_latency_fields_old_and_new(full_run: Path):
    manifests = {m.target: m for m in read_inputs([full_run / "dist"]).manifests}
    cpu, jetson = manifests["cpu"], manifests["jetson-orin"]
    assert cpu.measured_latency_ms == 0.21 and cpu.predicted_latency_ms == 0.2
    assert "lpnet" in cpu.prediction_source
    assert jetson.measured_latency_ms is None and jetson.predicted_latency_ms == pytest.approx(0.0123)
    assert json.loads(json.dumps(cpu.widths)) == [{"stem": 4, "block": 8}, {"stem": 8, "block": 16}]


def test_a_folder_written_by_prune_reads_through_the_typed_manifest(tmp_path: Path):
    from toolchain.cli import main

    out = tmp_path / "runs" / "demo"
    assert main(["prune", "--model", "zoo:demo", "--ratio", "0.5", "--data", "none", "--out", str(out)]) == 0
    (record,) = read_inputs([tmp_path / "runs"]).manifests
    assert record.model == "zoo:demo" and record.target == "cpu" and record.manifest.version == MANIFEST_VERSION
    kept, dense = record.widths
    assert kept["stem.0"] == 16 and dense["stem.0"] == 32
    assert record.measured_latency_ms is None and record.measurement_source is None  # a ratio prune is not timed


def test_a_manifest_of_a_newer_version_is_listed_unreadable(full_run: Path):
    path = full_run / "dist" / "cpu" / "fixture-tiny" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": MANIFEST_VERSION + 1}))
    inputs = read_inputs([full_run / "dist"])
    assert [m.target for m in inputs.manifests] == ["jetson-orin"]
    (skipped,) = inputs.unreadable
    assert skipped.reason.startswith(f"ManifestError: manifest version {MANIFEST_VERSION + 1} is newer")
