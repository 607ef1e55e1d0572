"""Read a measurement database (`toolchain/latency/store.py`'s SQLite schema) without importing its writer.

Opened read-only; only the columns the report shows are read. A file that is not such a database returns
None (the caller lists it as unrecognised); a corrupt one raises `sqlite3.DatabaseError` (listed as unreadable).

Example:
    >>> db = read_database(Path("runs/latency.db"), "runs/latency.db")
    >>> db.summary[0]
    ('zoo:resnet18', 'cpu', 'onnxruntime', 1, 'model', 301)
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from pathlib import Path

from toolchain.report.records import Database, Fingerprint, Method, ModelConfig, fingerprint_key

_REQUIRED_COLUMNS = {"kind", "model", "widths_json", "layers_json", "target", "backend", "threads", "replicate",
                     "sample_tag", "fingerprint_id", "fingerprint_json", "median_ms", "n_runs"}


def layer_key(spec: dict) -> str:
    """The identity of a layer's work (op, channels, kernel, stride, groups, spatial size, batch)."""
    return json.dumps(spec, sort_keys=True)


def read_database(path: Path, source: str) -> tuple[Database, list[Fingerprint]] | None:
    """The database's contents, or None when `path` holds no `measurements` table of the known schema."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(measurements)")}
        if not _REQUIRED_COLUMNS <= columns:
            return None
        summary = tuple(connection.execute(
            "SELECT model, target, backend, threads, kind, COUNT(*) FROM measurements "
            "GROUP BY model, target, backend, threads, kind ORDER BY model, target, kind"))
        fingerprints = [
            Fingerprint(fingerprint_key(json.loads(facts), fid), json.loads(facts), "measurement database")
            for fid, facts in connection.execute(
                "SELECT fingerprint_id, MIN(fingerprint_json) FROM measurements GROUP BY fingerprint_id")
        ]
        configs, single_op_ms, replicates = [], {}, []
        query = ("SELECT kind, model, widths_json, layers_json, target, replicate, sample_tag, fingerprint_id, "
                 "median_ms FROM measurements ORDER BY id")
        for kind, model, widths, layers, target, replicate, tag, fid, median in connection.execute(query):
            if kind == "layer":
                single_op_ms[layer_key(json.loads(widths))] = median
            elif replicate == 0:
                configs.append(ModelConfig(model, json.loads(widths), tuple(json.loads(layers)), median, tag,
                                           target, fid))
            else:
                replicates.append((model, widths, median))
        method = _method(connection, configs, replicates)
    finally:
        connection.close()
    database = Database(source, summary, method, tuple(f.key for f in fingerprints), tuple(configs), single_op_ms)
    return database, fingerprints


def _method(connection: sqlite3.Connection, configs: list[ModelConfig], replicates: list[tuple]) -> Method:
    runs = sorted({n for (n,) in connection.execute("SELECT DISTINCT n_runs FROM measurements")})
    stable = connection.execute("SELECT AVG(stable), COUNT(*) FROM measurements").fetchone()
    clocks = sorted({json.loads(f).get("clock", "not recorded") for (f,) in connection.execute(
        "SELECT DISTINCT fingerprint_json FROM measurements")})
    first = {(c.model, json.dumps(c.widths)): c.median_ms for c in configs}
    deviations = [abs(median / first[(model, widths)] - 1) for model, widths, median in replicates
                  if first.get((model, widths))]
    noise = (f"median {100 * statistics.median(deviations):.2f}%, max {100 * max(deviations):.2f}% deviation of "
             f"{len(deviations)} re-measurements from the first measurement" if deviations else None)
    stable_text = f"; {100 * stable[0]:.0f}% of {stable[1]} rows stable (IQR within the limit)" if stable[1] else ""
    return Method(
        warmup_runs=None,
        timed_runs=runs[0] if len(runs) == 1 else None,
        statistic=f"median and minimum of the timed runs (IQR and MAD stored){stable_text}"
                  + (f"; {runs[0]} to {runs[-1]} timed runs per row" if len(runs) > 1 else ""),
        clock=", ".join(clocks) if clocks else None,
        noise_floor=noise,
    )
