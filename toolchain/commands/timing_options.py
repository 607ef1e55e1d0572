"""The `--clock` and `--statistic` options, one definition for every command that measures or fits.

Defaults are those of the project's benchmarks: the thread-CPU clock where the inference runs on the timing
thread (`auto`), and the minimum of the timed runs, re-measured until two attempts agree — on a shared machine
the median drifts with other load by 10-20%, the minimum of agreeing attempts repeats within a few percent.
"""

from __future__ import annotations

import click

from toolchain.latency.measure import CLOCKS, STATISTICS
from toolchain.targets import AUTO_CLOCK

DEFAULT_STATISTIC = "min"

clock_option = click.option(
    "--clock", type=click.Choice([AUTO_CLOCK, *CLOCKS]), default=AUTO_CLOCK, show_default=True,
    help="auto: thread_cpu (CPU time of the timing thread) for 1-thread cpu targets timed here, wall elsewhere")
statistic_option = click.option(
    "--statistic", type=click.Choice(STATISTICS), default=DEFAULT_STATISTIC, show_default=True,
    help="a measurement's latency: min of the timed runs, re-measured until two attempts agree (repeatable on "
         "a shared machine), or median, re-measured while the spread is wide")
