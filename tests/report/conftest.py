"""Fixture runs for the report: hand-made, tiny inputs of each kind (test data, never shown as results).

`fixtures/full/` holds one of every input kind except the measurement database, which is written here from
`fixtures/measurements.json` with the schema of `toolchain/latency/store.py` (SQLite is binary; its rows stay readable
as JSON). `fixtures/partial/` holds a manifest without widths, a corrupt manifest and an unrelated JSON file.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# The columns of toolchain/latency/store.py's `measurements` table (schema version 1).
_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY, config_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, model TEXT NOT NULL,
    widths_json TEXT NOT NULL, layers_json TEXT NOT NULL, input_shape_json TEXT NOT NULL, batch INTEGER NOT NULL,
    target TEXT NOT NULL, backend TEXT NOT NULL, threads INTEGER NOT NULL, replicate INTEGER NOT NULL,
    sample_tag TEXT NOT NULL, macs INTEGER NOT NULL, fingerprint_id TEXT NOT NULL, fingerprint_json TEXT NOT NULL,
    median_ms REAL NOT NULL, iqr_ms REAL NOT NULL, mad_ms REAL NOT NULL, min_ms REAL NOT NULL,
    n_runs INTEGER NOT NULL, attempts INTEGER NOT NULL, stable INTEGER NOT NULL, created_at TEXT NOT NULL
);
INSERT INTO schema_version (version) VALUES (1);
"""


def write_measurement_db(path: Path) -> Path:
    rows = json.loads((FIXTURES / "measurements.json").read_text())["rows"]
    connection = sqlite3.connect(path)
    with connection:
        connection.executescript(_SCHEMA)
        for index, r in enumerate(rows):
            connection.execute(
                "INSERT INTO measurements (config_key, kind, model, widths_json, layers_json, input_shape_json, "
                "batch, target, backend, threads, replicate, sample_tag, macs, fingerprint_id, fingerprint_json, "
                "median_ms, iqr_ms, mad_ms, min_ms, n_runs, attempts, stable, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f"fixture-{index}", r["kind"], r["model"], json.dumps(r["widths"]), json.dumps(r["layers"]),
                 json.dumps(r["input_shape"]), r["input_shape"][0], r["target"], r["backend"], r["threads"],
                 r["replicate"], r["sample_tag"], r["macs"], r["fingerprint_id"],
                 json.dumps(r["fingerprint"], sort_keys=True), r["median_ms"], r["iqr_ms"], r["mad_ms"], r["min_ms"],
                 r["n_runs"], r["attempts"], int(r["stable"]), "2026-01-01T00:00:00+00:00"))
    connection.close()
    return path


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    """A copy of fixtures/full/ with the measurement database written into runs/."""
    root = tmp_path / "full"
    shutil.copytree(FIXTURES / "full", root)
    write_measurement_db(root / "runs" / "latency-fixture.db")
    return root


@pytest.fixture
def partial_run(tmp_path: Path) -> Path:
    root = tmp_path / "partial"
    shutil.copytree(FIXTURES / "partial", root)
    return root


@pytest.fixture(scope="session")
def full_report(tmp_path_factory) -> tuple[Path, object]:
    """The report of the full fixture run, built once for the session (rendering tests share it)."""
    from toolchain.report import build_report

    root = tmp_path_factory.mktemp("report") / "full"
    shutil.copytree(FIXTURES / "full", root)
    write_measurement_db(root / "runs" / "latency-fixture.db")
    return root, build_report([root], root.parent / "out")
