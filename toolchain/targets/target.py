"""`Target`: where latency is measured and how, as one frozen value.

Device, backend, threads, host clock, statistic, warm-up and timed runs, minimum timed span, the size of an
on-the-fly profile, the measurement lock, and an optional board behind a TVM RPC tracker. Every default
comes from `toolchain.defaults`, so the library, the CLI and `make` measure alike. The clock `auto` is
resolved here, once, when the value is made (`resolve_clock`): names, manifests and measurements then all
see the clock actually used.

    >>> target = Target("cpu")                       # 1 thread, default backend, the project's timing policy
    >>> target.label, target.clock, target.statistic
    ('cpu/onnxruntime/1t', 'thread_cpu', 'min')
    >>> Target("cpu", threads=2).clock               # other threads do part of the work: the wall clock
    'wall'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolchain import defaults
from toolchain.targets import DEFAULT_BACKEND, RpcEndpoint, Runtime, get_target
from toolchain.targets.measurement import MEASUREMENT_LOCK

AUTO_CLOCK = "auto"  # resolved per target by `resolve_clock`


def runs_on_timing_thread(runtime: Runtime) -> bool:
    """The whole inference runs on the calling thread, so that thread's CPU clock is the inference's time."""
    return runtime.name == "cpu" and runtime.threads == 1 and runtime.backend in ("onnxruntime", "torch") \
        and runtime.rpc is None


def resolve_clock(clock: str, runtime: Runtime | None) -> str:
    """`auto`: the thread-CPU clock where the inference runs on the timing thread (time other processes hold
    the core is not counted, so timings on a shared machine repeat), the wall clock everywhere else and when
    no runtime is known (the wall clock is valid for every runner). Any other clock stands as given.

    >>> resolve_clock("auto", get_target("cpu")), resolve_clock("auto", get_target("cpu", threads=2))
    ('thread_cpu', 'wall')
    """
    if clock != AUTO_CLOCK:
        return clock
    return "thread_cpu" if runtime is not None and runs_on_timing_thread(runtime) else "wall"


@dataclass(frozen=True)
class Target:
    """Where latency is measured (device, backend, threads, optional RPC board) and how (clock, statistic,
    runs, minimum timed span). `clock="auto"` is resolved on construction; `backend=None` is the device's
    default backend (`tvm` for a board over RPC).

    >>> cpu = Target("cpu")                        # this host: onnxruntime, 1 thread, the defaults' policy
    >>> (cpu.label, cpu.clock, cpu.statistic)
    ('cpu/onnxruntime/1t', 'thread_cpu', 'min')
    >>> Target("cpu", threads=4).clock             # inference off the timing thread: the wall clock
    'wall'
    """

    device: str = defaults.TARGET  # a device class of the runtime table: cpu, cuda
    backend: str | None = defaults.BACKEND
    threads: int = defaults.THREADS
    clock: str = defaults.CLOCK  # "thread_cpu": CPU time of the timing thread; "wall"; "auto": see resolve_clock
    statistic: str = defaults.STATISTIC  # a measurement's latency: min of the timed runs, or median
    warmup_runs: int = defaults.WARMUP_RUNS
    timed_runs: int = defaults.TIMED_RUNS
    min_timed_ms: float = defaults.MIN_TIMED_MS  # timed runs span at least this long (more runs for small models)
    profile_samples: int = defaults.PROFILE_SAMPLES  # configurations measured when a predictor is built on the fly
    lock_path: str = MEASUREMENT_LOCK
    # A board behind a TVM RPC tracker: profiled, fitted and measured there (backend tvm) instead of here.
    rpc: RpcEndpoint | None = field(default=None, compare=False)

    def __post_init__(self):
        # Resolved without checking that the backend is installed (that is `resolve()`'s job): a Target is a
        # value, made e.g. as a config default at import.
        unchecked = Runtime(self.device, self._backend_name() or "", self.threads, self.rpc)
        object.__setattr__(self, "clock", resolve_clock(self.clock, unchecked))

    def _backend_name(self) -> str | None:
        return self.backend or ("tvm" if self.rpc is not None else DEFAULT_BACKEND.get(self.device))

    def resolve(self) -> Runtime:
        """The runtime that compiles and times for this target; ToolchainError names the valid choices or why
        a backend is unavailable."""
        return get_target(self.device, self._backend_name(), self.threads, rpc=self.rpc)

    @property
    def label(self) -> str:
        """The runtime's label, e.g. `cpu/onnxruntime/1t` (resolves the runtime)."""
        return self.resolve().label

    @property
    def where(self) -> str:
        """The label used for predictor and database names: the runtime's label, plus the board's key over RPC."""
        return f"{self.label}@rpc-{self.rpc.key}" if self.rpc is not None else self.label

    def measure_config(self):
        """How every timing of this target is taken (profiling and budget checks alike): a
        `toolchain.latency.measure.MeasureConfig`."""
        from toolchain.latency.measure import MeasureConfig  # the harness sits above targets: imported on use

        return MeasureConfig(warmup_runs=self.warmup_runs, timed_runs=self.timed_runs, clock=self.clock,
                             statistic=self.statistic, min_timed_ms=self.min_timed_ms)

    def describe(self) -> dict:
        """What the manifest records about the measurement (`latency_target`)."""
        return {"label": self.where, "clock": self.clock, "statistic": self.statistic,
                "timed_runs": self.timed_runs, "min_timed_ms": self.min_timed_ms}
