"""Input shapes typed by users: `1,3,224,224` (or `1x3x224x224`)."""

from __future__ import annotations

import click


def parse_shape_text(text: str) -> tuple[int, ...]:
    """`"1,3,32,32"` -> `(1, 3, 32, 32)`; raises ValueError naming the text otherwise.

    >>> parse_shape_text("1x3x32x32")
    (1, 3, 32, 32)
    """
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"{text!r} is not a shape of positive sizes like 1,3,224,224")
    return shape


def parse_shape(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    """click callback for `--input-shape`."""
    if value is None:
        return None
    try:
        return parse_shape_text(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
