"""Input shapes typed by users: `1,3,224,224` (or `1x3x224x224`)."""

from __future__ import annotations

import math
import re

import click

# An example input larger than this (2**31 floats, 8 GiB) cannot be a deployment input; refusing it at parse
# time beats an allocation error halfway through a command.
MAX_INPUT_ELEMENTS = 2**31


def parse_shape_text(text: str) -> tuple[int, ...]:
    """`"1,3,32,32"` -> `(1, 3, 32, 32)`; raises ValueError naming the text otherwise.

    Every part between separators must be a positive integer: `1,3,x` is not `(1, 3)`.

    >>> parse_shape_text("1x3x32x32")
    (1, 3, 32, 32)
    """
    parts = [part.strip() for part in re.split(r"[,x]", text)]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(f"{text!r} is not a shape like 1,3,224,224")
    shape = tuple(int(part) for part in parts)
    if any(d <= 0 for d in shape):
        raise ValueError(f"{text!r} is not a shape of positive sizes like 1,3,224,224")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise ValueError(f"{text!r} has {math.prod(shape):,} elements, more than {MAX_INPUT_ELEMENTS:,}")
    return shape


def parse_shape(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    """click callback for `--input-shape`."""
    if value is None:
        return None
    try:
        return parse_shape_text(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
