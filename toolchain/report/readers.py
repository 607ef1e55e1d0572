"""Find the toolchain's outputs under run folders and parse each kind, keyed on recognisable files and fields.

Recognised: deploy bundles / pruned folders (`manifest.json`), sweep rows (JSON or CSV with a budget column),
predictor benchmarks (JSON with `heldout`), kernel benchmarks (JSON or CSV rows with `pattern` and
`speedup_vs_dense`) and measurement databases (SQLite). A file that fails to parse is listed as unreadable;
a JSON/CSV file of no known kind as unrecognised. Nothing is guessed.

Example:
    >>> inputs = read_inputs([Path("runs"), Path("benchmarks/results")])
    >>> len(inputs.manifests), [u.path for u in inputs.unreadable]
    (2, ['runs/broken/manifest.json'])
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.manifest import Manifest, ManifestError
from toolchain.report.database import read_database
from toolchain.report.records import (
    Database,
    Fingerprint,
    KernelBenchmark,
    ManifestRecord,
    Method,
    PredictorBenchmark,
    PredictorScore,
    SweepPoint,
    fingerprint_key,
    is_sweep_row,
    number,
    sweep_point,
)

_SUFFIXES = {".json", ".csv", ".db", ".sqlite", ".sqlite3"}
_SKIPPED_DIRS = {".venv", "venv", "node_modules", "__pycache__", ".git"}
# Files of known kinds the report does not use (they belong to a pruned folder or a predictor artifact).
_KNOWN_UNUSED = {"arch.json", "meta.json", "config.json", "tokenizer.json"}


@dataclass(frozen=True)
class Skipped:
    """A file the report could not use, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class RunInputs:
    """Everything read from the run folders, with the fingerprints its numbers refer to."""

    roots: tuple[str, ...]
    manifests: tuple[ManifestRecord, ...]
    sweep_points: tuple[SweepPoint, ...]
    predictor_benchmarks: tuple[PredictorBenchmark, ...]
    kernel_benchmarks: tuple[KernelBenchmark, ...]
    databases: tuple[Database, ...]
    fingerprints: dict  # key -> Fingerprint
    unreadable: tuple[Skipped, ...]
    unrecognised: tuple[Skipped, ...]

    @property
    def is_empty(self) -> bool:
        return not (self.manifests or self.sweep_points or self.predictor_benchmarks or self.kernel_benchmarks
                    or self.databases)


class _Collector:
    def __init__(self, display_root: Path):
        self.display_root = display_root
        self.found: dict[str, list] = {k: [] for k in ("manifests", "sweep_points", "predictor_benchmarks",
                                                       "kernel_benchmarks", "databases")}
        self.fingerprints: dict[str, Fingerprint] = {}
        self.unreadable: list[Skipped] = []
        self.unrecognised: list[Skipped] = []

    def name(self, path: Path, root: Path) -> str:
        """`path` relative to the working folder, else as `<root folder name>/<path under root>`."""
        try:
            return str(path.resolve().relative_to(self.display_root))
        except ValueError:
            pass
        try:
            return str(Path(root.resolve().name) / path.resolve().relative_to(root.resolve()))
        except ValueError:
            return str(path)

    def fingerprint(self, facts, recorded_by: str, given_id: str | None = None) -> str | None:
        if not isinstance(facts, dict) or not facts:
            return None
        key = fingerprint_key(facts, given_id)
        self.fingerprints.setdefault(key, Fingerprint(key, facts, recorded_by))
        return key


def read_inputs(paths: Iterable[Path], display_root: Path | None = None) -> RunInputs:
    """Read every recognisable output under `paths` (folders are searched recursively).

    A path that does not exist, or a file given directly that cannot be read, raises `ToolchainError`;
    inside folders, a bad file is recorded as unreadable and the rest is still read.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ToolchainError("give at least one run folder or result file")
    collector = _Collector((display_root or Path.cwd()).resolve())
    for root in paths:
        if not root.exists():
            raise ToolchainError(f"{root} does not exist")
        if root.is_file():
            _read_file(root, root.parent, collector, strict=True)
            continue
        for path in sorted(_walk(root)):
            _read_file(path, root, collector, strict=False)
    return RunInputs(roots=tuple(str(p) for p in paths),
                     **{k: tuple(v) for k, v in collector.found.items()},
                     fingerprints=collector.fingerprints,
                     unreadable=tuple(collector.unreadable), unrecognised=tuple(collector.unrecognised))


def _walk(root: Path) -> Iterable[Path]:
    """Candidate files under `root`; in a bundle folder (one with a manifest.json) only the manifest."""
    bundle = (root / "manifest.json").is_file()
    for path in root.iterdir():
        if path.is_dir() and not path.is_symlink():
            if path.name not in _SKIPPED_DIRS and not path.name.startswith("."):
                yield from _walk(path)
        elif (path.is_file() and path.suffix.lower() in _SUFFIXES and path.name not in _KNOWN_UNUSED
              and not path.name.startswith(".")):  # hidden: temporaries and the report's own stamp
            if not bundle or path.name == "manifest.json":
                yield path


def _read_file(path: Path, root: Path, collector: _Collector, strict: bool) -> None:
    name = collector.name(path, root)
    try:
        kind = _parse(path, name, collector)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error, sqlite3.DatabaseError, KeyError, TypeError,
            ManifestError) as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}"
        if strict:
            raise ToolchainError(f"cannot read {path}: {reason}") from None
        collector.unreadable.append(Skipped(name, reason))
        return
    if kind is None:
        if strict:
            raise ToolchainError(f"{path} is not a toolchain output the report knows (manifest, sweep, "
                                 "predictor or kernel benchmark, measurement database)")
        collector.unrecognised.append(Skipped(name, "not an output the report knows"))


def _parse(path: Path, name: str, collector: _Collector) -> str | None:
    suffix = path.suffix.lower()
    if suffix in (".db", ".sqlite", ".sqlite3"):
        read = read_database(path, name)
        if read is None:
            return None
        database, fingerprints = read
        for fp in fingerprints:
            collector.fingerprints.setdefault(fp.key, fp)
        collector.found["databases"].append(database)
        return "database"
    if suffix == ".csv":
        return _parse_csv(path, name, collector)
    data = json.loads(path.read_text())
    if isinstance(data, dict) and (path.name == "manifest.json" or "per_group_widths" in data) and "model" in data:
        manifest = Manifest.from_json(data)  # a newer version: ManifestError, listed as unreadable
        deployment = manifest.deployment
        facts = {k: v for k, v in (("device", deployment and deployment.device),
                                   ("versions", deployment and deployment.versions)) if isinstance(v, dict)}
        collector.found["manifests"].append(ManifestRecord(name, manifest,
                                                           collector.fingerprint(facts, "deploy manifest")))
        return "manifest"
    if isinstance(data, dict) and isinstance(data.get("heldout"), list):
        collector.found["predictor_benchmarks"].append(_predictor_benchmark(path, name, data, collector))
        return "predictor benchmark"
    rows = data.get("rows", data.get("points")) if isinstance(data, dict) else data
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
        if _is_kernel_row(rows[0]):
            fid = collector.fingerprint(fingerprint, "kernel benchmark")
            collector.found["kernel_benchmarks"].append(KernelBenchmark(
                name, fid, _kernel_method(data.get("command") if isinstance(data, dict) else None),
                tuple(rows), _sibling_png(path)))
            return "kernel benchmark"
        if is_sweep_row(rows[0]):
            fid = collector.fingerprint(fingerprint, "budget sweep")
            collector.found["sweep_points"].extend(sweep_point(r, name, fid) for r in rows)
            return "sweep"
    return None


def _parse_csv(path: Path, name: str, collector: _Collector) -> str | None:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    if _is_kernel_row(rows[0]):
        if _json_twin_ok(path):  # the JSON twin carries the fingerprint; read that one
            return "kernel benchmark (CSV twin)"
        collector.found["kernel_benchmarks"].append(KernelBenchmark(name, None, Method(), tuple(
            {k: (number(v) if k in _KERNEL_NUMBERS else v) for k, v in r.items()} for r in rows), _sibling_png(path)))
        return "kernel benchmark"
    if is_sweep_row(rows[0]):
        if _json_twin_ok(path):
            return "sweep (CSV twin)"
        collector.found["sweep_points"].extend(sweep_point(r, name) for r in rows)
        return "sweep"
    return None


_KERNEL_NUMBERS = {"sparsity", "median_ms", "spread_ms", "speedup_vs_dense", "ideal_speedup", "share_of_ideal",
                   "effective_tflops"}


def _json_twin_ok(path: Path) -> bool:
    """Whether `path` has a readable JSON twin (same name, .json), which then stands for both."""
    try:
        json.loads(path.with_suffix(".json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def _is_kernel_row(row: dict) -> bool:
    return {"pattern", "sparsity", "speedup_vs_dense"} <= set(row)


def _sibling_png(path: Path) -> str | None:
    png = path.with_suffix(".png")
    return str(png) if png.is_file() else None


def _flag(command, name: str) -> int | None:
    match = re.search(rf"--{name}[ =](\d+)", command or "")
    return int(match[1]) if match else None


def _kernel_method(command) -> Method:
    return Method(warmup_runs=_flag(command, "warmup"), timed_runs=_flag(command, "repeats"),
                  statistic="median of the timed runs, spread = inter-quartile range" if command else None)


def _predictor_benchmark(path: Path, name: str, data: dict, collector: _Collector) -> PredictorBenchmark:
    fid = collector.fingerprint(data.get("fingerprint"), "predictor benchmark", data.get("fingerprint_id"))
    command = data.get("command")
    noise = {m: n for m, n in (data.get("noise_floor") or {}).items() if isinstance(n, dict) and n.get("n")}
    noise_text = "; ".join(f"{m}: median {n.get('median_abs_dev_pct', float('nan')):.2f}%, max "
                           f"{n.get('max_abs_dev_pct', float('nan')):.2f}% over {n['n']} re-measurements"
                           for m, n in noise.items()) or None
    method = Method(warmup_runs=_flag(command, "warmup"), timed_runs=_flag(command, "runs"),
                    statistic="median of the timed runs per configuration" if command else None,
                    clock=data.get("clock"), noise_floor=noise_text)
    scores = [_score(row, name, fid, "held-out configurations", (row.get("models") or ["?"])[0])
              for row in data["heldout"]]
    scores += [_score(row, name, fid, "unseen architecture", row.get("unseen_model", "?"))
               for row in data.get("cross_architecture") or []]
    return PredictorBenchmark(name, fid, data.get("target"), method, tuple(scores), noise, _sibling_png(path))


def _score(row: dict, source: str, fid: str | None, scope: str, model: str) -> PredictorScore:
    measured = row.get("measured_ms") or row.get("heldout_measured_ms") or ()
    predicted = row.get("predicted_ms") or row.get("heldout_predicted_ms") or ()
    pairs = [(m, p) for m, p in zip(measured, predicted) if number(m) is not None and number(p) is not None]
    n = number(row.get("n"))
    return PredictorScore(
        source=source, fingerprint_id=fid, model=str(model), predictor=str(row.get("predictor", "?")), scope=scope,
        n=int(n) if n is not None else None, mape_pct=number(row.get("mape_pct")),
        within_5pct=number(row.get("within_5pct")), within_10pct=number(row.get("within_10pct")),
        spearman=number(row.get("spearman")),
        measured_ms=tuple(float(m) for m, _ in pairs), predicted_ms=tuple(float(p) for _, p in pairs))
