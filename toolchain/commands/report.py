"""`toolchain report RUNS... --out report/`: one HTML page and a Markdown summary from the toolchain's outputs."""

from __future__ import annotations

from pathlib import Path

import click

from toolchain.commands.options import out_option


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option(required=False, default=Path("report"), help="folder for report.html, report.md and images/")
@click.option("--bundle", help="which pruned model to show per layer: part of its manifest path "
                               "(default: the first with a profiled dense model)")
def report(runs: tuple[Path, ...], out: Path, bundle: str | None) -> None:
    """Build a benchmark report from run folders and result files (deploy manifests, sweep results,
    predictor and kernel benchmarks, measurement databases). Missing inputs are reported as missing."""
    from toolchain.report import build_report

    result = build_report(runs, out, bundle)
    click.echo(f"wrote {result.html_path} (self-contained) and {result.markdown_path} "
               f"(+ {len(result.image_paths)} images in {result.markdown_path.parent / 'images'})")
    for title, status in result.sections:
        click.echo(f"  {status:<9} {title}")
    if result.unreadable:
        click.echo(f"  unreadable inputs (listed in the report): {'; '.join(result.unreadable)}")
