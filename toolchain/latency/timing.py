"""Timing one model on a `Target`: compiled on one torch thread, timed under the measurement lock by the
target's measurement policy, with RPC retries for a board.

    >>> from toolchain.targets import Target
    >>> measure_ms = target_measure(Target("cpu"))
    >>> measure_ms(model.eval(), example_input)     # min of the timed runs, in ms      # doctest: +SKIP
    0.41
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from toolchain.inputs import ModelInputs
from toolchain.latency.measure import measure
from toolchain.targets import Target, measurement_lock
from toolchain.threads import torch_threads

MeasureFn = Callable[[nn.Module, ModelInputs], float]


def target_measure(target: Target) -> MeasureFn:
    """A `measure_ms(model, example_input)` timing on the target (ms by `target.statistic`)."""
    runtime = target.resolve()
    config = target.measure_config()

    def timed(model: nn.Module, example_input: ModelInputs) -> float:
        with torch_threads(1):
            runner = runtime.prepare(model.eval(), example_input)
        return measure(runner, config).value(target.statistic)

    def measure_ms(model: nn.Module, example_input: ModelInputs) -> float:
        if target.rpc is None:
            with torch_threads(1):
                runner = runtime.prepare(model.eval(), example_input)
            with measurement_lock(target.lock_path):
                return measure(runner, config).value(target.statistic)
        # Compile, upload and time inside the lock and with retries: a session opened before waiting for the
        # lock can expire while it waits, and a board that drops is reconnected (DeviceLostError after the
        # retries, one line).
        from toolchain.latency.rpc import with_retries  # on use: `python -m toolchain.latency.rpc` runs it as main

        with measurement_lock(target.lock_path):
            return with_retries(lambda: timed(model, example_input), target.rpc, "timing a pruned model")

    return measure_ms
