"""The worked examples in the sweep statistics' docstrings run as written."""

from __future__ import annotations

import doctest

from benchmarks import sweep_stats


def test_sweep_stats_docstring_examples_pass():
    result = doctest.testmod(sweep_stats)
    assert result.attempted >= 3 and result.failed == 0
