"""The report built from fixture runs: every section and image is there, numbers keep their source, and empty or
partial run folders give a report that says what is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolchain.errors import ToolchainError
from toolchain.report import build_report
from toolchain.report.plots import pareto_front

SECTION_IDS = ("inputs", "fingerprints", "method", "sweep", "predictors", "pruned", "kernels", "bundles", "facts")
FIGURES = ("sweep-pareto.png", "sweep-predicted-vs-measured.png", "predictor-scatter-0.png", "kept-widths.png",
           "layer-latency.png", "kernel-speedup.png")


def test_full_report_has_every_section_and_image(full_report):
    _, result = full_report
    html = result.html_path.read_text()
    for anchor in SECTION_IDS:
        assert f'<section id="{anchor}">' in html
    assert [status for _, status in result.sections] == ["complete"] * len(SECTION_IDS)
    assert [p.name for p in result.image_paths] == list(FIGURES)
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    for path in result.image_paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    # Self-contained and static: no script, no external reference.
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)


def test_markdown_says_the_same_as_html(full_report):
    _, result = full_report
    markdown = result.markdown_path.read_text()
    for name in FIGURES:
        assert f"(images/{name})" in markdown
    for heading in ("## Inputs", "## Devices and software", "## Measurement method", "## Latency-budget sweep",
                    "## Latency predictor quality", "## Pruned model: ", "## Sparse kernel benchmarks",
                    "## Deploy bundles", "## Appendix: recorded facts"):
        assert heading in markdown


def test_numbers_name_their_source_and_predicted_is_labelled(full_report):
    _, result = full_report
    markdown = result.markdown_path.read_text()
    # The fixture bundle on the Jetson was not measured: its latency is shown predicted, with its source.
    jetson = next(line for line in markdown.splitlines() if line.startswith("| full/dist/jetson-orin/fixture-tiny |"))
    assert "| missing |" in jetson and "0.0123 ms (predicted: fixture roofline prior" in jetson
    assert "full/dist/jetson-orin/fixture-tiny/manifest.json [F" in jetson
    # Budget hit rate: knapsack/l1 measured 0.31, 0.37, 0.46 ms against 0.3, 0.4, 0.5 ms -> 2 of 3; the point
    # without a measured latency is neither a hit nor a miss.
    assert "| knapsack / l1 | 4 | 3 | 2 | 66.7% |" in markdown
    assert "| lpnet | held-out configurations | 6 | 3.90% | 50.0% | 83.0% | 0.940 |" in markdown
    assert "FIXTURE CPU (test data)" in markdown and "thread_cpu" in markdown


def test_per_layer_latency_marks_unmeasured_layers(full_report):
    _, result = full_report
    markdown = result.markdown_path.read_text()
    # The fixture database times every layer shape alone except the pruned linear 8->4.
    assert "| #5 | linear 16->4 @1 | 0.0712 ms | linear 8->4 @1 | missing |" in markdown
    assert "dense 0.500 ms, pruned 0.210 ms" in markdown


def test_kernel_table_compares_with_ideal_and_counts_unmeasured(full_report):
    _, result = full_report
    markdown = result.markdown_path.read_text()
    assert "| cpu float32 | block4x4 | 80.0% | toolchain-cpp | 2 | 3.00x | 5.00x | 60.0% | 0 |" in markdown
    assert "| cuda float16 | block16x16 | 80.0% | toolchain-triton | 0 | missing | 5.00x | missing | 2: not measured" \
        in markdown


def test_manifests_with_a_budget_stand_in_for_missing_sweep_rows(full_run: Path, tmp_path: Path):
    result = build_report([full_run / "dist"], tmp_path / "out")
    markdown = result.markdown_path.read_text()
    assert dict(result.sections)["Latency-budget sweep"] == "complete"
    assert "1 point(s), each from a manifest built for a latency budget" in markdown
    # 0.21 ms measured for a 0.3 ms budget is under budget but below the [0.9, 1] band: not a hit
    assert "| knapsack / l1 | 1 | 1 | 0 | 0.0% |" in markdown


def test_partial_run_says_what_is_missing(partial_run: Path, tmp_path: Path):
    result = build_report([partial_run], tmp_path / "out")
    statuses = dict(result.sections)
    for title in ("Latency-budget sweep", "Latency predictor quality", "Pruned model", "Sparse kernel benchmarks"):
        assert statuses[title] == "missing"
    assert result.unreadable == ("partial/runs/broken/manifest.json (JSONDecodeError: Expecting value: line 2 "
                                 "column 1 (char 47))",)
    html = result.html_path.read_text()
    assert "Missing: budget sweep results" in html and "unreadable: JSONDecodeError" in html
    assert "partial/runs/notes.json" in html  # listed as not used
    assert not result.image_paths


def test_empty_folder_gives_a_report_of_missing_inputs(tmp_path: Path):
    (tmp_path / "runs").mkdir()
    result = build_report([tmp_path / "runs"], tmp_path / "out")
    assert all(status in ("missing", "partial") for _, status in result.sections)
    assert "No recognisable inputs were found" in result.html_path.read_text()
    assert any("deploy bundles" in m for m in result.missing)


def test_rebuild_removes_the_figures_of_the_earlier_report(full_run: Path, partial_run: Path, tmp_path: Path):
    first = build_report([full_run], tmp_path / "out")
    assert first.image_paths
    second = build_report([partial_run], tmp_path / "out")
    assert not second.image_paths and not any(p.exists() for p in first.image_paths)


def test_files_the_toolchain_did_not_write_are_kept_byte_for_byte(full_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    foreign_png = out / "images" / "holiday.png"
    foreign_png.parent.mkdir(parents=True)
    foreign_png.write_bytes(b"\x89PNG a user's own picture")
    build_report([full_run], out)
    build_report([full_run], out)  # a rebuild replaces its own figures, never the user's
    assert foreign_png.read_bytes() == b"\x89PNG a user's own picture"


def test_a_foreign_report_html_is_refused_before_anything_is_written(full_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("<p>someone else's page</p>")
    with pytest.raises(ToolchainError, match="report.html, which the toolchain did not write"):
        build_report([full_run], out)
    assert (out / "report.html").read_text() == "<p>someone else's page</p>"
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


@pytest.mark.parametrize("points, front", [
    ([(1, 0.5), (2, 0.9), (3, 0.8)], [(1, 0.5), (2, 0.9)]),
    ([(2, 0.7), (1, 0.7)], [(1, 0.7)]),
    ([(1, 0.9), (1, 0.5), (3, 0.95)], [(1, 0.9), (3, 0.95)]),
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front
