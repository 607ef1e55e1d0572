"""The measurement policy's defaults, defined once.

The library (`Target`, `MeasureConfig`, `FitConfig`), every CLI command and the Makefile take their defaults
from here, so a latency measured through the API, the CLI or `make` is measured the same way. They are the
project's benchmark protocol: on a shared machine the minimum of agreeing attempts repeats within a few
percent, the median drifts with other load by 10-20%.

    >>> from toolchain import defaults
    >>> (defaults.TARGET, defaults.THREADS, defaults.STATISTIC)
    ('cpu', 1, 'min')
"""

from __future__ import annotations

TARGET = "cpu"  # a device of the device table
BACKEND: str | None = None  # None: the device's default backend (cpu: onnxruntime, cuda: torch; tvm over RPC)
THREADS = 1
CLOCK = "auto"  # thread_cpu for 1-thread cpu targets timed here, wall elsewhere (resolved per target)
STATISTIC = "min"  # a measurement's latency: min of the timed runs, or median
WARMUP_RUNS = 5
TIMED_RUNS = 25
MIN_TIMED_MS = 100.0  # timed runs span at least this long: sub-ms models get enough runs
PROFILE_SAMPLES = 100  # configurations measured when a predictor is built on the fly
ONNX_OPSET = 17
