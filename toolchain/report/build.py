"""`build_report`: read run folders, assemble the document, write `report.html`, `report.md` and `images/`.

Example:
    >>> result = build_report(["runs/", "benchmarks/results/"], "report/")
    >>> result.html_path, [s for s, status in result.sections if status != "complete"]
    (PosixPath('report/report.html'), ['Kernel benchmarks'])
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from toolchain.errors import ToolchainError
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


def build_report(inputs: Sequence[str | Path] | RunInputs, out_dir: str | Path,
                 bundle: str | None = None) -> ReportResult:
    """Write the report of `inputs` (run folders / result files, or already-read inputs) to `out_dir`.

    Raises `ToolchainError` for a path that does not exist or a result file given directly that cannot be read.
    """
    if not isinstance(inputs, RunInputs):
        inputs = read_inputs([Path(p) for p in inputs])
    document = build_document(inputs, bundle)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ToolchainError(f"--out {out_dir} is a file, not a folder")
    images = out_dir / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.glob("*.png"):  # figures of an earlier report in this folder
        stale.unlink()
    image_paths = []
    for figure in document.figures:
        path = images / figure.name
        path.write_bytes(figure.png)
        image_paths.append(path)
    html_path, markdown_path = out_dir / HTML_NAME, out_dir / MARKDOWN_NAME
    html_path.write_text(render_html(document), encoding="utf-8")
    markdown_path.write_text(render_markdown(document), encoding="utf-8")
    return ReportResult(
        html_path=html_path,
        markdown_path=markdown_path,
        image_paths=tuple(image_paths),
        sections=tuple((s.title, s.status) for s in document.sections),
        missing=tuple(f"{title}: {m.what} — {m.why}" for title, m in document.missing),
        unreadable=tuple(f"{s.path} ({s.reason})" for s in inputs.unreadable),
    )
