"""Benchmark reports for hardware teams: run folders in, one self-contained HTML page and a Markdown summary out.

Reading order: `records` (what each input holds) -> `readers` / `database` (finding and parsing inputs) ->
`provenance`, `sections`, `layers` (the document's sections) -> `plots` -> `html` / `markdown` -> `build`.

Example:
    >>> from toolchain.report import build_report
    >>> result = build_report(["runs/", "benchmarks/results/", "dist/"], "report/")
    >>> result.html_path
    PosixPath('report/report.html')
"""

from toolchain.report.build import ReportResult, build_document, build_report
from toolchain.report.readers import RunInputs, read_inputs

__all__ = ["ReportResult", "RunInputs", "build_document", "build_report", "read_inputs"]
