"""The measurement database: SQLite in WAL mode, one row per measured configuration, schema versioned.

Each row has a unique `config_key` (hash of what was measured and where), so a resumed campaign skips what
is already there and never duplicates; every row is committed on its own as soon as it is settled. A campaign
times its configurations in chunks (`CampaignConfig.interleave`, 16 by default; one at a time on a remote
device) whose rows settle together, so a killed campaign redoes at most the chunk it was timing. On a device
farm each row names its board in its fingerprint, and `device_timings` holds the spread set: the same
configurations timed once on every board. A locked or corrupt file raises ToolchainError, never an empty
result.

Example:
    >>> with MeasurementStore("runs/latency.db") as store:
    ...     store.insert(row)
    ...     rows = store.rows(model="zoo:resnet18", target="cpu", backend="onnxruntime", threads=1)
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.inputs import key_batch

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    config_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('model', 'layer')),
    model TEXT NOT NULL,
    widths_json TEXT NOT NULL,
    layers_json TEXT NOT NULL,
    input_shape_json TEXT NOT NULL,
    batch INTEGER NOT NULL,
    target TEXT NOT NULL,
    backend TEXT NOT NULL,
    threads INTEGER NOT NULL,
    replicate INTEGER NOT NULL,
    sample_tag TEXT NOT NULL,
    macs INTEGER NOT NULL,
    fingerprint_id TEXT NOT NULL,
    fingerprint_json TEXT NOT NULL,
    median_ms REAL NOT NULL,
    iqr_ms REAL NOT NULL,
    mad_ms REAL NOT NULL,
    min_ms REAL NOT NULL,
    n_runs INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    stable INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS architectures (
    model TEXT NOT NULL,
    input_shape_json TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    PRIMARY KEY (model, input_shape_json)
);
-- The same configurations timed on every board of a farm (toolchain.latency.spread): how much boards of one
-- kind differ. A configuration's own row stays in `measurements`; these are the per-board repeats.
CREATE TABLE IF NOT EXISTS device_timings (
    config_key TEXT NOT NULL,
    device TEXT NOT NULL,
    fingerprint_id TEXT NOT NULL,
    median_ms REAL NOT NULL,
    min_ms REAL NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (config_key, device)
);
CREATE INDEX IF NOT EXISTS measurements_by_target ON measurements (model, target, backend, threads, kind);
"""


@functools.cache
def _expected_columns() -> dict[str, set[str]]:
    """The columns of each table as `_SCHEMA` creates them (read from a scratch in-memory database)."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(_SCHEMA)
        tables = [name for (name,) in scratch.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: {row[1] for row in scratch.execute(f"PRAGMA table_info({table})")} for table in tables}
    finally:
        scratch.close()


@dataclass(frozen=True)
class MeasurementRow:
    """One measured configuration. `widths` are per-group widths (kind 'model') or the op's shape (kind
    'layer'); `layers` are the per-layer feature dicts of `toolchain.latency.features`."""

    kind: str
    model: str
    widths: dict
    layers: list
    input_shape: tuple[int, ...]
    target: str
    backend: str
    threads: int
    replicate: int
    sample_tag: str
    macs: int
    fingerprint_id: str
    fingerprint: dict
    median_ms: float
    iqr_ms: float
    mad_ms: float
    min_ms: float
    n_runs: int
    attempts: int
    stable: bool
    created_at: str = ""

    @property
    def batch(self) -> int:
        return key_batch(self.input_shape)

    @property
    def config_key(self) -> str:
        return config_key(
            self.kind,
            self.model,
            self.widths,
            self.input_shape,
            self.target,
            self.backend,
            self.threads,
            self.replicate,
        )


@dataclass(frozen=True)
class DeviceTiming:
    """One configuration timed on one board of a farm (`device` is its tracker address)."""

    config_key: str
    device: str
    fingerprint_id: str
    median_ms: float
    min_ms: float


def config_key(
    kind: str,
    model: str,
    widths: dict,
    input_shape,
    target: str,
    backend: str,
    threads: int,
    replicate: int = 0,
) -> str:
    """The identity of one configuration: what was measured, at which shape, on which target, which repeat.

    The machine fingerprint is stored, not keyed: a campaign refuses to mix machines in one database.
    """
    payload = json.dumps([kind, model, widths, list(input_shape), target, backend, threads, replicate], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class MeasurementStore:
    """The SQLite database of measurements (created on first use)."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise ToolchainError(f"measurement database {self.path} does not exist; run `toolchain profile` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1e3)
            self.connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.connection.execute("PRAGMA journal_mode = WAL")
            self.connection.execute("PRAGMA synchronous = NORMAL")
            self._check_schema()
        except sqlite3.Error as error:
            raise self._clear_error(error) from error

    def _clear_error(self, error: sqlite3.Error) -> ToolchainError:
        text = str(error)
        if "locked" in text or "busy" in text:
            return ToolchainError(
                f"measurement database {self.path} is locked by another process ({text}); "
                "wait for it or use another --db"
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return ToolchainError(
                f"measurement database {self.path} is corrupt ({text}); move it aside and profile again"
            )
        return ToolchainError(f"measurement database {self.path}: {text}")

    def _check_schema(self) -> None:
        with self.connection:
            self.connection.executescript(_SCHEMA)
            self._check_columns()
            versions = [row[0] for row in self.connection.execute("SELECT version FROM schema_version")]
            stored = self.connection.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
            if not versions and stored:  # a version row deleted by hand: the rows' schema is unknown
                raise ToolchainError(
                    f"measurement database {self.path} holds {stored} measurements but no schema version "
                    "(the schema_version row was deleted?); move it aside and profile again"
                )
            if not versions:
                self.connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif versions != [SCHEMA_VERSION]:
                raise ToolchainError(
                    f"measurement database {self.path} has schema version {versions}, "
                    f"this toolchain reads version {SCHEMA_VERSION}"
                )

    def _check_columns(self) -> None:
        """Every table has the columns this version reads (a dropped column would fail every read later)."""
        for table, expected in _expected_columns().items():
            present = {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}
            missing = sorted(expected - present)
            if missing:
                raise ToolchainError(f"measurement database {self.path}: table {table} lacks column(s) "
                                     f"{', '.join(missing)}; move it aside and profile again")

    def __enter__(self) -> MeasurementStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def insert(self, row: MeasurementRow, replace: bool = False) -> bool:
        """Write and commit one row; False when its configuration is already stored (nothing changes),
        unless `replace` (a re-timing that supersedes the stored row)."""
        values = asdict(row)
        values["created_at"] = row.created_at or now_utc()
        record = {
            "config_key": row.config_key,
            "kind": row.kind,
            "model": row.model,
            "widths_json": json.dumps(row.widths),
            "layers_json": json.dumps(row.layers),
            "input_shape_json": json.dumps(list(row.input_shape)),
            "batch": row.batch,
            "fingerprint_json": json.dumps(row.fingerprint, sort_keys=True),
            "stable": int(row.stable),
        }
        for name in (
            "target",
            "backend",
            "threads",
            "replicate",
            "sample_tag",
            "macs",
            "fingerprint_id",
            "median_ms",
            "iqr_ms",
            "mad_ms",
            "min_ms",
            "n_runs",
            "attempts",
            "created_at",
        ):
            record[name] = values[name]
        columns = ", ".join(record)
        placeholders = ", ".join("?" for _ in record)
        try:
            with self.connection:
                # A replacement updates the row in place: it keeps its id, so rows stay in measurement order.
                on_conflict = ("DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in record if c != "config_key")
                               if replace else "DO NOTHING")
                cursor = self.connection.execute(
                    f"INSERT INTO measurements ({columns}) VALUES ({placeholders}) "
                    f"ON CONFLICT (config_key) {on_conflict}",
                    list(record.values()),
                )
        except sqlite3.Error as error:
            raise self._clear_error(error) from error
        return cursor.rowcount == 1

    def insert_device_timing(self, timing: DeviceTiming) -> bool:
        """Record one board's timing of a configuration; False when that board's timing is already stored."""
        try:
            with self.connection:
                cursor = self.connection.execute(
                    "INSERT INTO device_timings (config_key, device, fingerprint_id, median_ms, min_ms, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (config_key, device) DO NOTHING",
                    (timing.config_key, timing.device, timing.fingerprint_id, timing.median_ms, timing.min_ms,
                     now_utc()),
                )
        except sqlite3.Error as error:
            raise self._clear_error(error) from error
        return cursor.rowcount == 1

    def device_timings(self, fingerprint_id: str | None = None) -> list[DeviceTiming]:
        """Per-board timings (of one kind of device when `fingerprint_id` is given), in insertion order."""
        sql = "SELECT config_key, device, fingerprint_id, median_ms, min_ms FROM device_timings"
        params: tuple = ()
        if fingerprint_id is not None:
            sql, params = sql + " WHERE fingerprint_id = ?", (fingerprint_id,)
        return [DeviceTiming(*found) for found in self._query(sql + " ORDER BY rowid", params)]

    def save_groups(self, model: str, input_shape, groups: list[tuple[str, int, int]]) -> None:
        """Record a model's channel groups in order as (name, dense_width, unit); the lpnet vector order."""
        try:
            with self.connection:
                self.connection.execute(
                    "INSERT OR REPLACE INTO architectures (model, input_shape_json, groups_json) VALUES (?, ?, ?)",
                    (model, json.dumps(list(input_shape)), json.dumps([list(g) for g in groups])),
                )
        except sqlite3.Error as error:
            raise self._clear_error(error) from error

    def groups(self, model: str, input_shape) -> list[tuple[str, int, int]]:
        sql = "SELECT groups_json FROM architectures WHERE model = ? AND input_shape_json = ?"
        found = self._query(sql, (model, json.dumps(list(input_shape))))
        return [tuple(g) for g in json.loads(found[0][0])] if found else []

    def existing_keys(self) -> set[str]:
        return {key for (key,) in self._query("SELECT config_key FROM measurements", ())}

    def fingerprint_ids(self, model: str, target: str, backend: str, threads: int) -> set[str]:
        sql = (
            "SELECT DISTINCT fingerprint_id FROM measurements WHERE model = ? AND target = ? AND backend = ? "
            "AND threads = ?"
        )
        return {fid for (fid,) in self._query(sql, (model, target, backend, threads))}

    def rows(
        self,
        model: str | None = None,
        target: str | None = None,
        backend: str | None = None,
        threads: int | None = None,
        kind: str = "model",
    ) -> list[MeasurementRow]:
        """Rows matching every filter given, in insertion order."""
        filters = {"kind": kind, "model": model, "target": target, "backend": backend, "threads": threads}
        where = " AND ".join(f"{name} = ?" for name, value in filters.items() if value is not None)
        params = tuple(value for value in filters.values() if value is not None)
        return list(self._iter_rows(f"SELECT * FROM measurements WHERE {where} ORDER BY id", params))

    def summary(self) -> list[tuple]:
        """(model, target, backend, threads, kind, count) for every stored combination."""
        sql = (
            "SELECT model, target, backend, threads, kind, COUNT(*) FROM measurements "
            "GROUP BY model, target, backend, threads, kind ORDER BY model"
        )
        return list(self._query(sql, ()))

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise self._clear_error(error) from error

    def _iter_rows(self, sql: str, params: tuple) -> Iterator[MeasurementRow]:
        try:
            cursor = self.connection.execute(sql, params)
            names = [d[0] for d in cursor.description]
            records = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        except sqlite3.Error as error:
            raise self._clear_error(error) from error
        for r in records:
            yield MeasurementRow(
                kind=r["kind"],
                model=r["model"],
                widths=json.loads(r["widths_json"]),
                layers=json.loads(r["layers_json"]),
                input_shape=tuple(json.loads(r["input_shape_json"])),
                target=r["target"],
                backend=r["backend"],
                threads=r["threads"],
                replicate=r["replicate"],
                sample_tag=r["sample_tag"],
                macs=r["macs"],
                fingerprint_id=r["fingerprint_id"],
                fingerprint=json.loads(r["fingerprint_json"]),
                median_ms=r["median_ms"],
                iqr_ms=r["iqr_ms"],
                mad_ms=r["mad_ms"],
                min_ms=r["min_ms"],
                n_runs=r["n_runs"],
                attempts=r["attempts"],
                stable=bool(r["stable"]),
                created_at=r["created_at"],
            )
