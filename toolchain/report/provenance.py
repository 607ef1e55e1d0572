"""Where every number comes from: the inputs read, the machine fingerprints (F1, F2, ...) and how each source
measured (warm-up, repeats, statistic, clock, noise floor).

Example:
    >>> labels = FingerprintLabels(inputs.fingerprints)
    >>> labels.source("runs/a/manifest.json", fid)
    'runs/a/manifest.json [F1]'
"""

from __future__ import annotations

from toolchain.report.document import MISSING, Missing, Paragraph, Section, Table, TableGroup, cell
from toolchain.report.readers import RunInputs
from toolchain.report.records import Fingerprint, Method

# Headline facts, each read from the first key a fingerprint has (benchmarks name them differently).
_HEADLINE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CPU", ("cpu_model", "cpu", "device.description")),
    ("GPU", ("gpu",)),
    ("clocks (MHz)", ("gpu_clocks_mhz", "sm_clock_mhz", "max_sm_clock_mhz", "mem_clock_mhz")),
    ("threads", ("threads", "torch_threads")),
    ("logical CPUs", ("cpu_count", "logical_cpus")),
    ("driver", ("gpu_driver", "driver")),
    ("target / backend", ("target", "backend", "device.name")),
)


def flatten(facts: dict, prefix: str = "") -> dict[str, str]:
    """Nested facts as 'a.b' -> text.

    >>> flatten({"versions": {"torch": "2.13.0"}, "threads": 1})
    {'versions.torch': '2.13.0', 'threads': '1'}
    """
    flat = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = MISSING if value is None else str(value)
    return flat


class FingerprintLabels:
    """Short labels F1, F2, ... for fingerprints, in the order the inputs recorded them."""

    def __init__(self, fingerprints: dict[str, Fingerprint]):
        self.fingerprints = fingerprints
        self.labels = {key: f"F{index}" for index, key in enumerate(fingerprints, start=1)}

    def label(self, key: str | None) -> str:
        return self.labels.get(key, "no fingerprint recorded") if key else "no fingerprint recorded"

    def source(self, path: str, key: str | None) -> str:
        return f"{path} [{self.labels[key]}]" if key in self.labels else f"{path} [no fingerprint recorded]"

    def source_many(self, path: str, keys) -> str:
        known = [self.labels[k] for k in keys if k in self.labels]
        return f"{path} [{', '.join(known)}]" if known else f"{path} [no fingerprint recorded]"


def inputs_section(inputs: RunInputs) -> Section:
    kinds = (("deploy bundles / pruned folders (manifest.json)", sorted({m.source for m in inputs.manifests})),
             ("budget sweep results", sorted({p.source for p in inputs.sweep_points})),
             ("latency predictor benchmarks", [b.source for b in inputs.predictor_benchmarks]),
             ("kernel benchmarks", [b.source for b in inputs.kernel_benchmarks]),
             ("measurement databases", [d.source for d in inputs.databases]))
    blocks: list = [Paragraph("Read from: " + ", ".join(inputs.roots) + ". The report shows only what these files "
                              "contain; anything they do not contain is marked missing, never estimated.")]
    blocks.append(Table(("input kind", "files read"), tuple(
        (kind, ", ".join(files) if files else MISSING) for kind, files in kinds)))
    blocks += [Missing(kind, "no such file under the given folders") for kind, files in kinds if not files]
    if inputs.unreadable:
        blocks.append(Table(("unreadable file", "reason"), tuple((s.path, s.reason) for s in inputs.unreadable),
                            "Files that looked like inputs but could not be read; their numbers are not in "
                            "this report."))
        blocks += [Missing(s.path, f"unreadable: {s.reason}") for s in inputs.unreadable]
    if inputs.unrecognised:
        blocks.append(Table(("file not used", "reason"), tuple((s.path, s.reason) for s in inputs.unrecognised)))
    return Section("inputs", "Inputs", tuple(blocks))


def _pick(facts: dict, keys: tuple[str, ...]) -> str:
    flat = flatten(facts)
    found = {k: v for key in keys for k, v in flat.items() if k == key or k.startswith(key + ".")}
    if len(found) == 1:
        return next(iter(found.values()))
    return "; ".join(f"{k}={v}" for k, v in found.items()) if found else "not recorded"


def fingerprint_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    if not inputs.fingerprints:
        return Section("fingerprints", "Devices and software", (
            Missing("device and software fingerprints", "none of the inputs records the machine it measured on"),))
    headers = ("label", "recorded by", *(name for name, _ in _HEADLINE), "library versions")
    rows = []
    for key, fp in inputs.fingerprints.items():
        versions = {k: v for k, v in flatten(fp.facts).items() if "version" in k or k in ("python", "os")}
        rows.append((labels.label(key), fp.recorded_by, *(_pick(fp.facts, keys) for _, keys in _HEADLINE),
                     "; ".join(f"{k.removeprefix('versions.')}={v}" for k, v in versions.items()) or "not recorded"))
    blocks: list = [Paragraph(
        "Every number below names its source file and, in brackets, the fingerprint of the machine it was taken on. "
        "A deploy manifest's fingerprint is the target device from the device table plus the library versions of "
        "the build host; 'not recorded' means the file does not say. Every recorded fact is listed at the end."),
        Table(headers, tuple(rows))]
    return Section("fingerprints", "Devices and software", tuple(blocks))


def facts_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    """The appendix: every fact of every fingerprint, as recorded."""
    if not inputs.fingerprints:
        return Section("facts", "Appendix: recorded facts", (
            Missing("device and software fingerprints", "none of the inputs records the machine it measured on"),))
    return Section("facts", "Appendix: recorded facts", (TableGroup(tuple(
        Table(("fact", "value"), tuple(flatten(fp.facts).items()), f"{labels.label(key)}: every recorded fact "
              f"(id {key}, recorded by the {fp.recorded_by})")
        for key, fp in inputs.fingerprints.items())),))


def _method_row(source: str, method: Method) -> tuple[str, ...]:
    return (source, cell(method.warmup_runs, "{:d}"), cell(method.timed_runs, "{:d}"), cell(method.statistic),
            cell(method.clock), cell(method.noise_floor))


def method_section(inputs: RunInputs, labels: FingerprintLabels) -> Section:
    rows = [_method_row(labels.source(b.source, b.fingerprint_id), b.method) for b in inputs.predictor_benchmarks]
    rows += [_method_row(labels.source(b.source, b.fingerprint_id), b.method) for b in inputs.kernel_benchmarks]
    rows += [_method_row(labels.source_many(d.source, d.fingerprint_ids), d.method) for d in inputs.databases]
    for manifest in inputs.manifests:
        how = manifest.measurement_source
        rows.append((labels.source(manifest.source, manifest.fingerprint_id), MISSING, MISSING,
                     cell(how) if how else "not recorded in the manifest", MISSING, MISSING))
    if not rows:
        return Section("method", "Measurement method", (
            Missing("measurement method", "no benchmark, database or manifest was read"),))
    blocks = [Paragraph("How each source timed its latencies, as the source records it (warm-up runs, timed runs, "
                        "the statistic reported, the clock, and the noise floor from re-measuring the same "
                        "configuration)."),
              Table(("source", "warm-up runs", "timed runs", "statistic", "clock", "noise floor"), tuple(rows))]
    held = tuple((labels.source_many(d.source, d.fingerprint_ids), *(str(v) for v in row))
                 for d in inputs.databases for row in d.summary)
    if held:
        blocks.append(Table(("database", "model", "target", "backend", "threads", "kind", "rows"), held,
                            "What each measurement database holds (kind 'model': whole width configurations; "
                            "'layer': single layers timed alone)."))
    return Section("method", "Measurement method", tuple(blocks))
