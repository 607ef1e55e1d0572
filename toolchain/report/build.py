"""`build_report`: read run folders, assemble the document, write `report.html`, `report.md` and `images/`.

Example:
    >>> result = build_report(["runs/", "benchmarks/results/"], "report/")
    >>> result.html_path, [s for s, status in result.sections if status != "complete"]
    (PosixPath('report/report.html'), ['Kernel benchmarks'])
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.output_folder import WRITTEN_BY, check_writable, stamp, write_json
from toolchain.report.document import Document, Figure, Section
from toolchain.report.html import render_html
from toolchain.report.layers import pruned_model_section
from toolchain.report.markdown import IMAGES_DIR, render_markdown
from toolchain.report.provenance import (
    FingerprintLabels,
    facts_section,
    fingerprint_section,
    inputs_section,
    method_section,
)
from toolchain.report.readers import RunInputs, read_inputs
from toolchain.report.sections import bundles_section, kernel_section, predictor_section, sweep_section

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
REPORT_STAMP = ".toolchain-report.json"  # which files of the folder the toolchain wrote (and may replace)


@dataclass(frozen=True)
class ReportResult:
    """What was written, each section's status, and every input that was missing or unreadable."""

    html_path: Path
    markdown_path: Path
    image_paths: tuple[Path, ...]
    sections: tuple[tuple[str, str], ...]  # (title, 'complete' | 'partial' | 'missing')
    missing: tuple[str, ...]  # "section: what — why"
    unreadable: tuple[str, ...]


def build_document(inputs: RunInputs, bundle: str | None = None) -> Document:
    """The report of `inputs` as a document; `bundle` picks the pruned model shown per layer (a path part)."""
    labels = FingerprintLabels(inputs.fingerprints)
    sections = (
        inputs_section(inputs),
        fingerprint_section(inputs, labels),
        method_section(inputs, labels),
        sweep_section(inputs, labels),
        predictor_section(inputs, labels),
        pruned_model_section(inputs, labels, bundle),
        kernel_section(inputs, labels),
        bundles_section(inputs, labels),
        facts_section(inputs, labels),
    )
    try:
        version = importlib.metadata.version("toolchain")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (f"Built {built} by toolchain {version} from {', '.join(inputs.roots)}."
                + (" No recognisable inputs were found: every section below says what is missing."
                   if inputs.is_empty else ""))
    return Document("Benchmark report", subtitle, _unique_figure_names(sections))


def _unique_figure_names(sections: tuple[Section, ...]) -> tuple[Section, ...]:
    seen: set[str] = set()
    result = []
    for section in sections:
        blocks = []
        for block in section.blocks:
            if isinstance(block, Figure):
                name, index = block.name, 1
                while name in seen:
                    index += 1
                    name = block.name.replace(".png", f"-{index}.png")
                seen.add(name)
                block = replace(block, name=name)
            blocks.append(block)
        result.append(replace(section, blocks=tuple(blocks)))
    return tuple(result)


def _previous_report_files(out_dir: Path) -> set[str]:
    """The files an earlier report wrote into `out_dir`, by the toolchain's stamp (none without one)."""
    try:
        document = json.loads((out_dir / REPORT_STAMP).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return set()
    if not isinstance(document, dict) or document.get("written_by") != WRITTEN_BY:
        return set()
    return {f for f in document.get("written_files", []) if isinstance(f, str) and ".." not in f.split("/")}


def write_report_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write `files` (relative name -> bytes) into `out_dir`, replacing only what an earlier report wrote.

    A file of the same name that the toolchain did not write (a user's own report.html or images/*.png) is
    refused before anything is written; figures of an earlier report that this one no longer has are removed.
    """
    previous = _previous_report_files(out_dir)
    foreign = sorted(name for name in files if (out_dir / name).exists() and name not in previous)
    if foreign:
        raise ToolchainError(f"--out {out_dir} holds {foreign[0]}, which the toolchain did not write; "
                             "choose another --out")
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    # The stamp lists both reports' files while they are swapped, so a kill leaves nothing unaccounted for.
    write_json(out_dir / REPORT_STAMP, stamp(sorted(previous | set(files))))
    for name in sorted(previous - set(files)):  # figures of an earlier report
        (out_dir / name).unlink(missing_ok=True)
    for name, payload in files.items():
        tmp = (out_dir / name).with_name(f".{Path(name).name}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, out_dir / name)
    write_json(out_dir / REPORT_STAMP, stamp(sorted(files)))


def build_report(inputs: Sequence[str | Path] | RunInputs, out_dir: str | Path,
                 bundle: str | None = None) -> ReportResult:
    """Write the report of `inputs` (run folders / result files, or already-read inputs) to `out_dir`.

    Raises `ToolchainError` for a path that does not exist or a result file given directly that cannot be read.
    """
    check_writable(Path(out_dir))  # before reading and rendering everything
    if not isinstance(inputs, RunInputs):
        inputs = read_inputs([Path(p) for p in inputs])
    document = build_document(inputs, bundle)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ToolchainError(f"--out {out_dir} is a file, not a folder")
    files = {HTML_NAME: render_html(document).encode("utf-8"),
             MARKDOWN_NAME: render_markdown(document).encode("utf-8"),
             **{f"{IMAGES_DIR}/{figure.name}": figure.png for figure in document.figures}}
    write_report_files(out_dir, files)
    html_path, markdown_path = out_dir / HTML_NAME, out_dir / MARKDOWN_NAME
    image_paths = [out_dir / name for name in files if name.startswith(f"{IMAGES_DIR}/")]
    return ReportResult(
        html_path=html_path,
        markdown_path=markdown_path,
        image_paths=tuple(image_paths),
        sections=tuple((s.title, s.status) for s in document.sections),
        missing=tuple(f"{title}: {m.what} — {m.why}" for title, m in document.missing),
        unreadable=tuple(f"{s.path} ({s.reason})" for s in inputs.unreadable),
    )
