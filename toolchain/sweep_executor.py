"""Where a sweep's points run: this machine's processes (`local`) or Ray tasks (`ray`), here or on a cluster.

With Ray every point (prune, recover, evaluate) is one task. A task returns its row and this process appends
it to `rows.jsonl`, so rows, resume and the report are those of the local executor, and a cluster needs no
shared folder. The predictor this process found or built is sent by value (worker nodes need no predictor
files). Timings on this host's device go through one measuring actor pinned to this node (one call at a time,
under the machine-wide measurement lock): every point is timed on the device the dense model was timed on,
and no two timings overlap. A board's timings are taken in the task, queued by the board's RPC tracker.
A point whose worker dies runs again (`max_retries`), then gets a row with the error; the sweep goes on.

>>> config = SweepConfig(model="zoo:demo", out=Path("runs/sweep-ray"), budgets=(0.5, 0.7),
...                      executor=ExecutorConfig("ray", ray_address="auto"))               # doctest: +SKIP
>>> rows = run_sweep(config)                                                            # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from toolchain.errors import ToolchainError

if TYPE_CHECKING:
    from toolchain.budget_providers import Measurer
    from toolchain.latency.provision import PredictorInfo
    from toolchain.sweep import SweepConfig

EXECUTORS = ("local", "ray")
RAY_MISSING = "--executor ray needs Ray: pip install 'toolchain[ray]' (in a clone: pip install -e '.[ray]')"
Point = tuple[str, float, str]  # (criterion, budget ratio, allocator)


@dataclass(frozen=True)
class ExecutorConfig:
    """How a sweep runs its points.

    >>> ExecutorConfig("ray", ray_address="auto").kind
    'ray'
    """

    kind: str = "local"
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or HOST:PORT: join that cluster
    ray_num_cpus: int | None = None  # CPUs of a Ray started here (None: all of this machine's)
    max_retries: int = 2  # a point whose worker process died runs again up to this many times, then fails

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ToolchainError(f"unknown executor {self.kind!r}; valid: {', '.join(EXECUTORS)}")
        if self.ray_address is not None and self.kind != "ray":
            raise ToolchainError("--ray-address needs --executor ray")
        if self.ray_address is not None and self.ray_address.startswith("ray://"):
            # A Ray Client driver is not a node: its timings could not be pinned to the device it timed the
            # dense model on.
            raise ToolchainError(f"--ray-address {self.ray_address}: Ray Client addresses are not supported; run "
                                 "the sweep on a node of the cluster (ray start --address=HEAD:6379) with "
                                 "--ray-address auto")
        if self.max_retries < 0:
            raise ToolchainError(f"max_retries must be >= 0, not {self.max_retries}")


def check_executor(executor: ExecutorConfig, workers: int) -> None:
    """Fail in one line before any model is loaded: Ray missing, or --workers given to Ray."""
    if executor.kind != "ray":
        return
    if workers > 1:
        raise ToolchainError("--workers is for the local executor; Ray runs as many points at once as the "
                             "cluster has CPUs")
    _import_ray()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ToolchainError(RAY_MISSING) from None
    return ray


@contextmanager
def ray_session(executor: ExecutorConfig) -> Iterator[Any]:
    """Ray, started here or joined at `executor.ray_address`; shut down afterwards only if started here
    (a caller that already runs Ray, e.g. a test's instance, keeps it, and its measuring lane)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    where = f"join the Ray cluster at {executor.ray_address}" if executor.ray_address else "start Ray here"
    try:
        ray.init(address=executor.ray_address, num_cpus=None if executor.ray_address else executor.ray_num_cpus,
                 include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        # Ray turns token authentication on by itself for "auto" only; its own error does not say so.
        hint = "; a cluster with token authentication also needs RAY_AUTH_MODE=token and its token" \
            if executor.ray_address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ else ""
        raise ToolchainError(f"could not {where}: {str(exc).strip().splitlines()[0]}{hint}") from None
    try:
        yield ray
    finally:
        _LANES.clear()
        ray.shutdown()


@dataclass
class Progress:
    """Points done / running / failed, as one line for the step messages.

    >>> Progress(total=8, done=3, failed=1).line(running=2)
    'points: 3 done, 2 running, 1 failed (of 8)'
    """

    total: int
    done: int = 0
    failed: int = 0

    def line(self, running: int) -> str:
        return f"points: {self.done} done, {running} running, {self.failed} failed (of {self.total})"


class _DeviceLane:
    """Ray actor on the driver's node that runs timings one call at a time (a sync actor's concurrency is 1)."""

    def measure(self, measurer: Measurer, model, example_input) -> float:
        return measurer(model, example_input)


@dataclass(frozen=True)
class _ThroughLane:
    """A `Measurer` for a task: sends the model to the driver node's lane and waits for its timing."""

    lane: Any
    measurer: Measurer

    def __call__(self, model, example_input) -> float:
        import ray

        return ray.get(self.lane.measure.remote(self.measurer, model, example_input))


_PREPARED: dict = {}  # in a worker process: the last criterion's loaded model and scores (one: models are large)


def _point_task(config: SweepConfig, point: Point, dense_ms: float, predictor: PredictorInfo,
                measurer: Measurer) -> dict:
    """One point in a Ray worker; the worker reuses its last criterion's scores, as the local executor does."""
    from toolchain.sweep import prepare_criterion, run_point

    criterion, budget_ratio, allocator = point
    key = repr((config.model, config.weights, config.input_shape, config.data, config.saliency, criterion))
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = prepare_criterion(config, criterion)
    return run_point(config, _PREPARED[key], budget_ratio, allocator, dense_ms, predictor, measurer)


_LANES: dict[tuple[str, str], Any] = {}  # (Ray job, node) -> lane handle, held so later sweeps reuse its process


def _measurer_for_tasks(ray, config: SweepConfig, measurer: Measurer) -> Measurer:
    """A board's measurer as it is (its tracker queues timings); otherwise one through this node's lane. The
    lane's handle is kept for the Ray session (an actor without handles ends), so a later sweep of the same
    session (tests, a notebook) finds it with torch imported already."""
    if config.target.rpc is not None and config.providers is None:
        return measurer
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    context = ray.get_runtime_context()
    key = (context.get_job_id(), context.get_node_id())
    if key not in _LANES:
        here = NodeAffinitySchedulingStrategy(node_id=key[1], soft=False)
        _LANES[key] = ray.remote(_DeviceLane).options(num_cpus=0, scheduling_strategy=here, max_restarts=2,
                                                      max_task_retries=2).remote()
    return _ThroughLane(_LANES[key], measurer)


def _error_of(exc: Exception, retries: int) -> str:
    """One line for a point's row: the point's own exception, or that its worker died."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception):
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__} (after {retries} retries): {first}"


def run_points_on_ray(config: SweepConfig, points: list[Point], dense_ms: float, predictor: PredictorInfo,
                      measurer: Measurer, step: Callable[[str], None]) -> None:
    """Run `points` as Ray tasks; append each row to `config.out` as it arrives, failed points included."""
    from toolchain.sweep import append_row

    executor = config.executor
    with ray_session(executor) as ray:
        task = ray.remote(_point_task).options(num_cpus=1, max_retries=executor.max_retries)
        lane_measurer = _measurer_for_tasks(ray, config, measurer)
        # sent once, not with every task; providers hold callables for this process only
        config_ref, dense_ref, predictor_ref, measurer_ref = (
            ray.put(value) for value in (replace(config, providers=None), dense_ms, predictor, lane_measurer))
        # No more tasks in flight than CPUs: a task waiting for a timing lends its CPU back to Ray, which would
        # otherwise start another worker process (another torch import) for a queued point.
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queued, pending, progress = list(points), {}, Progress(len(points))
        while queued or pending:
            while queued and len(pending) < slots:
                point = queued.pop(0)
                pending[task.remote(config_ref, point, dense_ref, predictor_ref, measurer_ref)] = point
            step(progress.line(running=len(pending)))
            ready, _ = ray.wait(list(pending), num_returns=1)
            point = pending.pop(ready[0])
            row = _row_of(ray, ready[0], point, config)
            append_row(config.out, row)
            progress.done += row["error"] is None
            progress.failed += row["error"] is not None
        step(progress.line(running=0))


def _row_of(ray, ref, point: Point, config: SweepConfig) -> dict:
    """The finished task's row, or a row with the error when the task raised or its worker died after retries."""
    from toolchain.sweep import failed_row

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        criterion, budget_ratio, allocator = point
        return failed_row(config, budget_ratio, criterion, allocator, _error_of(exc, config.executor.max_retries))
