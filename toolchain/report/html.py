"""Render a `Document` as one self-contained static HTML page: inline CSS, figures as base64 data URIs, no
JavaScript and nothing fetched at view time, so the single file opens anywhere.

Example:
    >>> page = render_html(document)
    >>> page.startswith("<!DOCTYPE html>"), "<script" in page
    (True, False)
"""

from __future__ import annotations

import base64
from html import escape

from toolchain.report.document import MISSING, Document, Figure, Missing, Paragraph, Section, Table, TableGroup

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1a202c;background:#f7fafc}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:1.7em;margin:0 0 4px}h2{border-bottom:2px solid #e2e8f0;padding-bottom:4px;margin-top:40px}
.subtitle{color:#4a5568;margin:0 0 16px}
nav ol{columns:2;padding-left:20px}nav a{color:#2b6cb0;text-decoration:none}
.badge{font-size:.65em;font-weight:600;padding:2px 8px;border-radius:10px;vertical-align:middle;margin-left:8px}
.complete{background:#c6f6d5;color:#22543d}.partial{background:#fefcbf;color:#744210}
.missing{background:#fed7d7;color:#822727}
.note{border-left:4px solid #e53e3e;background:#fff5f5;padding:6px 12px;margin:8px 0}
.scroll{overflow-x:auto;margin:12px 0}.group{display:flex;flex-wrap:wrap;gap:0 20px}
table{border-collapse:collapse;font-size:.82em}
caption{text-align:left;color:#4a5568;padding:4px 0;caption-side:top}
th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#edf2f7}tr:nth-child(even) td{background:#f7fafc}
td.missing-cell{color:#c53030;font-style:italic}
figure{margin:16px 0}figure img{max-width:100%;height:auto;border:1px solid #e2e8f0}
figcaption{color:#4a5568;font-size:.85em;margin-top:4px}
"""


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="missing-cell">{escape(v)}</td>' if v == MISSING else f"<td>{escape(v)}</td>"
                         for v in row) + "</tr>"
        for row in table.rows)
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(figure.alt)}">'
            f"<figcaption>{escape(figure.caption)}</figcaption></figure>")


def _block(block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, TableGroup):
        return '<div class="group">' + "".join(_table(t) for t in block.tables) + "</div>"
    if isinstance(block, Figure):
        return _figure(block)
    if isinstance(block, Missing):
        return f'<p class="note"><strong>Missing: {escape(block.what)}</strong> — {escape(block.why)}</p>'
    raise TypeError(f"unknown block {type(block).__name__}")


def _section(section: Section) -> str:
    badge = f'<span class="badge {section.status}">{section.status}</span>'
    body = "\n".join(_block(b) for b in section.blocks)
    return f'<section id="{escape(section.anchor)}">\n<h2>{escape(section.title)}{badge}</h2>\n{body}\n</section>'


def render_html(document: Document) -> str:
    """The whole page as one string."""
    toc = "".join(f'<li><a href="#{escape(s.anchor)}">{escape(s.title)}</a> '
                  f'<span class="badge {s.status}">{s.status}</span></li>' for s in document.sections)
    sections = "\n".join(_section(s) for s in document.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(document.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{escape(document.title)}</h1>
<p class="subtitle">{escape(document.subtitle)}</p>
<nav><ol>{toc}</ol></nav>
{sections}
</main>
</body>
</html>
"""
