"""Render a `Document` as Markdown (GitHub-flavoured tables) for a pull request or a wiki; figures are linked
as `images/<name>.png`, written beside the Markdown file.

Example:
    >>> print(render_markdown(document).splitlines()[0])
    # Benchmark report
"""

from __future__ import annotations

from toolchain.report.document import Document, Figure, Missing, Paragraph, Table, TableGroup

IMAGES_DIR = "images"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> list[str]:
    lines = [f"*{_escape(table.caption)}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(_escape(v) for v in row) + " |" for row in table.rows]
    return lines


def _block(block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, TableGroup):
        return [line for table in block.tables for line in (*_table(table), "")][:-1]
    if isinstance(block, Figure):
        return [f"![{block.alt}]({IMAGES_DIR}/{block.name})", "", f"*{block.caption}*"]
    if isinstance(block, Missing):
        return [f"> **Missing: {block.what}** — {block.why}"]
    raise TypeError(f"unknown block {type(block).__name__}")


def render_markdown(document: Document) -> str:
    """The whole summary as one string."""
    lines = [f"# {document.title}", "", document.subtitle, ""]
    lines += [f"- [{s.title}](#{s.anchor}) — {s.status}" for s in document.sections]
    for section in document.sections:
        lines += ["", f'<a id="{section.anchor}"></a>', f"## {section.title} ({section.status})", ""]
        for block in section.blocks:
            lines += [*_block(block), ""]
    return "\n".join(lines).rstrip() + "\n"
