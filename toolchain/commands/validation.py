"""Range-checked click types for every numeric option: a bad value is one `error:` line at parse time,
before any model is built or anything is measured.

click's own `FloatRange` lets NaN through (every comparison with NaN is false) and `inf` wherever there is
no upper bound, so floats go through `finite_float`.

>>> finite_float(min=0.0, min_open=True).convert("1.5", None, None)
1.5
"""

from __future__ import annotations

import math

import click


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (no nan, inf or -inf)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def finite_float(min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False) -> FiniteFloat:
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)


def count(min: int = 0, max: int | None = None) -> click.IntRange:
    """An integer count with bounds (`count(1)`: at least one)."""
    return click.IntRange(min=min, max=max)


# The shared ranges, so every command checks the same option the same way.
POSITIVE_MS = finite_float(min=0.0, min_open=True)  # a latency budget
NON_NEGATIVE_MS = finite_float(min=0.0)
SHARE = finite_float(min=0.0, max=1.0, min_open=True)  # a share of the dense model's latency or width: (0, 1]
FRACTION_BELOW_ONE = finite_float(min=0.0, max=1.0, max_open=True)  # [0, 1): a ratio of channels removed
OPEN_FRACTION = finite_float(min=0.0, max=1.0, min_open=True, max_open=True)  # (0, 1)
THREADS = count(1, 1024)
# Channel counts are rounded to multiples of this; beyond the widest layer of any model it would be ignored.
ROUND_TO = count(1, 1024)
