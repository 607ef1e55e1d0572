"""An independent timing of ONNX files: a plain onnxruntime InferenceSession loop, nothing of toolchain's.

It exists to check the toolchain's measurer (and the predictors fitted on its measurements) against a
timing written separately: no toolchain import, no sentinel, no agreement rule. Same settings as the
toolchain's cpu target (1 intra-op thread, 1 inter-op thread, sequential execution, full graph
optimisation), the same statistic (the minimum of the timed runs) and the same clock (CPU time of the
calling thread, `time.thread_time`: with one intra-op thread onnxruntime runs the whole graph on the calling
thread, so other processes' time on the core is left out).

Files are timed in rounds (each file once per round, in order), so one slow spell of the host cannot cover
every timing of one file; a file's latency is the minimum over all its rounds, and the spread of its
per-round minima is the noise of this timing.

    >>> timings = time_onnx_files(["a.onnx", "b.onnx"], PlainTiming(rounds=3))         # doctest: +SKIP
    >>> timings["a.onnx"].min_ms, timings["a.onnx"].round_min_ms
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True)
class PlainTiming:
    rounds: int = 3
    warmup_runs: int = 2
    min_runs: int = 10
    min_span_ms: float = 100.0  # timed runs of one round go on until they span this much thread-CPU time
    threads: int = 1


@dataclass(frozen=True)
class FileTiming:
    min_ms: float  # minimum over every timed run of every round
    round_min_ms: tuple[float, ...]  # each round's minimum
    runs: int

    @property
    def round_spread(self) -> float:
        """(largest round minimum / smallest) - 1: how far apart this timing's own repeats were."""
        return max(self.round_min_ms) / min(self.round_min_ms) - 1.0


def _session(path: str, threads: int) -> tuple[ort.InferenceSession, dict[str, np.ndarray]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        dtype = _DTYPES[spec.type]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        feeds[spec.name] = (rng.standard_normal(shape).astype(dtype) if dtype == np.float32
                            else np.ones(shape, dtype=dtype))
    return session, feeds


def _one_round(session: ort.InferenceSession, feeds: dict, config: PlainTiming) -> list[float]:
    for _ in range(config.warmup_runs):
        session.run(None, feeds)
    times_ms: list[float] = []
    while len(times_ms) < config.min_runs or sum(times_ms) < config.min_span_ms:
        start_s = time.thread_time()
        session.run(None, feeds)
        times_ms.append((time.thread_time() - start_s) * 1e3)
    return times_ms


def time_onnx_files(paths: Sequence[str], config: PlainTiming = PlainTiming()) -> dict[str, FileTiming]:
    """Each file's minimum thread-CPU time per run, over `config.rounds` rounds."""
    sessions = {path: _session(path, config.threads) for path in paths}
    per_round: dict[str, list[list[float]]] = {path: [] for path in paths}
    for _ in range(config.rounds):
        for path, (session, feeds) in sessions.items():
            per_round[path].append(_one_round(session, feeds, config))
    return {path: FileTiming(min(min(r) for r in rounds), tuple(min(r) for r in rounds),
                             sum(len(r) for r in rounds))
            for path, rounds in per_round.items()}
