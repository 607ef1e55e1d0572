"""The report as data: sections of paragraphs, tables, figures and 'missing' notes, rendered to HTML and Markdown.

Keeping one document model means the HTML page and the Markdown summary always say the same thing.

Example:
    >>> section = Section("kernels", "Kernel benchmarks", (Missing("kernel benchmarks", "no kernels-*.json found"),))
    >>> section.status
    'missing'
"""

from __future__ import annotations

from dataclasses import dataclass

MISSING = "missing"  # the cell text of a value an input does not contain


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class TableGroup:
    """Small tables shown side by side (one after another in Markdown)."""

    tables: tuple[Table, ...]


@dataclass(frozen=True)
class Figure:
    """A PNG figure; `name` is its file name in the Markdown summary's images folder."""

    name: str
    png: bytes
    alt: str
    caption: str


@dataclass(frozen=True)
class Missing:
    """An input the section needs and did not get, and why."""

    what: str
    why: str


Block = Paragraph | Table | TableGroup | Figure | Missing


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    blocks: tuple[Block, ...]

    @property
    def status(self) -> str:
        """'complete', 'partial' (something is missing) or 'missing' (nothing but missing notes)."""
        missing = [b for b in self.blocks if isinstance(b, Missing)]
        if not missing:
            return "complete"
        return "missing" if all(isinstance(b, (Missing, Paragraph)) for b in self.blocks) else "partial"


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    sections: tuple[Section, ...]

    @property
    def figures(self) -> tuple[Figure, ...]:
        return tuple(b for s in self.sections for b in s.blocks if isinstance(b, Figure))

    @property
    def missing(self) -> tuple[tuple[str, Missing], ...]:
        return tuple((s.title, b) for s in self.sections for b in s.blocks if isinstance(b, Missing))


def cell(value, fmt: str = "{:.3g}") -> str:
    """A table cell: formatted number or text, or 'missing' for None.

    >>> cell(None), cell(1.23456), cell(0.5, "{:.1%}"), cell("knapsack")
    ('missing', '1.23', '50.0%', 'knapsack')
    """
    if value is None:
        return MISSING
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    return str(value)
