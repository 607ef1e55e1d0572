"""`toolchain report RUNS... --out DIR`: writes the report and prints each section's status; bad input is one
line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

from toolchain.cli import main


def test_report_command_writes_html_and_markdown(full_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(full_run / "runs"), str(full_run / "benchmarks"), str(full_run / "dist"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert "complete  Latency-budget sweep" in printed and "6 images" in printed


def test_bundle_option_picks_the_pruned_model(full_run: Path, tmp_path: Path, capsys):
    assert main(["report", str(full_run), "--out", str(tmp_path / "r"), "--bundle", "jetson-orin"]) == 0
    assert "Pruned model: full/dist/jetson-orin/fixture-tiny/manifest.json" in capsys.readouterr().out


def test_missing_path_exits_2_with_one_line(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1


def test_unreadable_json_given_directly_exits_2(tmp_path: Path, capsys):
    broken = tmp_path / "latency-x.json"
    broken.write_text("{ not json")
    assert main(["report", str(broken), "--out", str(tmp_path / "r")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_no_runs_is_a_usage_error(tmp_path: Path, capsys):
    assert main(["report", "--out", str(tmp_path / "r")]) == 2
    assert "RUNS" in capsys.readouterr().err
