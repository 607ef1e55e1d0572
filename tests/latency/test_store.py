"""The measurement database: WAL, schema version, no duplicates, clear errors."""

import sqlite3
from dataclasses import replace

import pytest
from latency_synthetic import GROUPS, INPUT_SHAPE, synthetic_rows

from toolchain.errors import ToolchainError
from toolchain.latency.store import SCHEMA_VERSION, MeasurementStore


def test_rows_round_trip_in_wal_mode_with_schema_version(tmp_path):
    rows = synthetic_rows(5)
    with MeasurementStore(tmp_path / "m.db") as store:
        assert all(store.insert(row) for row in rows)
        back = store.rows(model="synthetic:net", target="cpu", backend="onnxruntime", threads=1)
        assert [r.widths for r in back] == [r.widths for r in rows]
        assert list(back[0].widths) == list(rows[0].widths)  # group order survives
        assert back[0].median_ms == rows[0].median_ms
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = store.connection.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(SCHEMA_VERSION,)]


def test_same_configuration_is_not_stored_twice(tmp_path):
    row = synthetic_rows(1)[0]
    with MeasurementStore(tmp_path / "m.db") as store:
        assert store.insert(row) is True
        assert store.insert(row) is False
        assert len(store.rows()) == 1


def test_a_replacement_updates_the_row_in_place(tmp_path):
    first, second = synthetic_rows(2)
    with MeasurementStore(tmp_path / "m.db") as store:
        store.insert(first), store.insert(second)
        assert store.insert(replace(first, min_ms=first.min_ms / 2), replace=True) is True
        rows = store.rows()
        assert [r.widths for r in rows] == [first.widths, second.widths]  # same place, same id
        assert rows[0].min_ms == pytest.approx(first.min_ms / 2)


def test_groups_keep_their_order(tmp_path):
    with MeasurementStore(tmp_path / "m.db") as store:
        store.save_groups("synthetic:net", INPUT_SHAPE, list(GROUPS))
        assert store.groups("synthetic:net", INPUT_SHAPE) == list(GROUPS)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ToolchainError, match="is corrupt"):
        MeasurementStore(path)


def test_locked_database_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "m.db"
    MeasurementStore(path).close()
    monkeypatch.setattr("toolchain.latency.store.BUSY_TIMEOUT_MS", 100)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ToolchainError, match="is locked"):
            with MeasurementStore(path) as store:
                store.insert(synthetic_rows(1)[0])
    finally:
        holder.rollback()
        holder.close()


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(ToolchainError, match="does not exist"):
        MeasurementStore(tmp_path / "absent.db", create=False)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "m.db"
    MeasurementStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ToolchainError, match="schema version"):
        MeasurementStore(path)


def _stored(path, rows=3):
    with MeasurementStore(path) as store:
        for row in synthetic_rows(rows):
            store.insert(row)


def test_a_deleted_schema_version_row_is_refused_not_restamped(tmp_path):
    path = tmp_path / "m.db"
    _stored(path)
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM schema_version")
    with pytest.raises(ToolchainError, match="holds 3 measurements but no schema version"):
        MeasurementStore(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0, "not re-stamped"


def test_a_dropped_column_is_one_clear_error(tmp_path):
    path = tmp_path / "m.db"
    _stored(path)
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE measurements DROP COLUMN min_ms")
    with pytest.raises(ToolchainError, match="table measurements lacks column\\(s\\) min_ms"):
        MeasurementStore(path)


def test_a_dropped_column_through_the_cli_is_one_line(tmp_path, capsys):
    from toolchain.cli import main

    path = tmp_path / "m.db"
    _stored(path)
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE measurements DROP COLUMN min_ms")
    assert main(["fit", "--db", str(path), "--predictor", "macs", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "min_ms" in err
    assert not (tmp_path / "p").exists()
