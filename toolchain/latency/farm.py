"""A device farm behind a TVM RPC tracker: every free board registered under a key works on one queue of jobs
at once, one worker thread per board, each holding the one session the tracker handed it.

The tracker assigns the boards (each worker asks it for a session under the key, as any client of the farm
would); the jobs wait in one shared queue here, and every result is settled on the caller's thread (a
database has one writer). A board that fails mid-job gives the job back to the queue and its worker asks the
tracker for a board again; a worker that gets none retires and the others go on. A job that failed on
`max_board_failures` boards is reported failed, so one job that crashes boards cannot take the farm down.

Example:
    >>> report = run_farm(endpoint, jobs, work=time_on_board, settle=store_row, fail=report_failure)
    ...                                                                                   # doctest: +SKIP
    >>> report.boards, report.lost                                                        # doctest: +SKIP
    (['127.0.0.1:9391', '127.0.0.1:9392'], [])
"""

from __future__ import annotations

import gc
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolchain.errors import ToolchainError
from toolchain.targets import RpcEndpoint
from toolchain.targets.backends.tvm_backend import RENEW_AFTER_S, RPC_SESSION_TIMEOUT_S

POLL_S = 0.2


class JobError(Exception):
    """A job failed for its own reason (e.g. its variant did not build), not because of the board."""


class NoBoardError(ConnectionError):
    """The tracker had no free board under the key within the wait."""


@dataclass
class Board:
    """One board of the farm, held through one RPC session; `address` is where the tracker sent us."""

    address: str
    session: Any
    opened_at: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        # The server serves one session at a time and takes the next request once this one is released.
        self.session = None
        gc.collect()


@dataclass(frozen=True)
class FarmSettings:
    """How long a worker waits for a board, when it renews its session, when a job is given up."""

    wait_s: float = 30.0  # for a free board, at the start and after its board failed
    renew_after_s: float = RENEW_AFTER_S  # before the server's session timeout ends a session mid-timing
    max_board_failures: int = 3


@dataclass
class FarmReport:
    boards: list[str] = field(default_factory=list)  # every board that joined, in order
    lost: list[str] = field(default_factory=list)  # "address: why" for each board failure


def free_boards(endpoint: RpcEndpoint) -> int | None:
    """How many boards under the key are free at the tracker now; None for a key it has never seen."""
    from tvm import rpc

    tracker = rpc.connect_tracker(endpoint.tracker_host, endpoint.tracker_port)
    try:
        summary = tracker.summary()
    finally:
        tracker.close()
    queue_info = summary.get("queue_info", {})
    return int(queue_info[endpoint.key].get("free", 0)) if endpoint.key in queue_info else None


def open_board(endpoint: RpcEndpoint, wait_s: float) -> Board:
    """A session on the next free board under the key, from the tracker's queue; NoBoardError after `wait_s`.

    TVM's `TrackerSession.request` waits without a limit, so the request is sent on a socket of our own that
    gives up; the tracker hands a board it could not deliver to the next request.
    """
    from tvm.rpc import base
    from tvm.rpc.client import connect

    address = (endpoint.tracker_host, endpoint.tracker_port)
    try:
        with socket.create_connection(address, timeout=wait_s) as sock:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise ToolchainError(f"{address[0]}:{address[1]} is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.REQUEST, endpoint.key, "", 1])
            answer = base.recvjson(sock)
    except TimeoutError as error:
        raise NoBoardError(f"no free board with key {endpoint.key!r} within {wait_s:g} s") from error
    if answer[0] != base.TrackerCode.SUCCESS:
        raise ConnectionError(f"tracker answered {answer!r}")
    host, port, match_key = answer[1]
    session = connect(host, port, match_key, session_timeout=RPC_SESSION_TIMEOUT_S)
    return Board(f"{host}:{port}", session)


def run_farm(
    endpoint: RpcEndpoint,
    jobs: Sequence[Any],
    work: Callable[[Any, Board], Any],
    settle: Callable[[Any, Any, str, bool], None],
    fail: Callable[[Any, Exception], None],
    pinned: Callable[[str], Sequence[Any]] = lambda address: (),
    settings: FarmSettings = FarmSettings(),
) -> FarmReport:
    """Run `work(job, board)` for every job on every free board at once; settle each result here.

    `settle(job, result, address, is_pinned)` and `fail(job, error)` run on this thread. `pinned(address)`
    (called on a worker thread) names jobs a board times itself before it takes from the queue (the same
    configurations on every board). `work` raises JobError for a job's own failure; a ToolchainError stops
    the farm; anything else is the board's failure. DeviceLostError when every board was lost with jobs left.
    """
    from toolchain.latency.rpc import tracker_unreachable_reason

    reason = tracker_unreachable_reason(endpoint)
    if reason:
        raise ToolchainError(reason)
    free = free_boards(endpoint)
    if free is None:
        raise ToolchainError(f"tracker {endpoint.tracker_host}:{endpoint.tracker_port} has no device with key "
                             f"{endpoint.key!r}")
    boards = max(free, 1)  # every board busy (another client): one worker waits `wait_s` for one
    farm = _Farm(endpoint, work, pinned, settings)
    for job in jobs:
        farm.jobs.put((job, 0))
    workers = [threading.Thread(target=farm.worker, name=f"board-{i}", daemon=True) for i in range(boards)]
    for worker in workers:
        worker.start()
    try:
        stop = farm.settle_events(len(jobs), len(workers), settle, fail)
    finally:
        farm.finished.set()  # also on Ctrl-C: each worker ends after its current job (daemon threads)
    for worker in workers:
        worker.join()
    if stop is not None:
        raise stop
    return farm.report


class _Farm:
    """The shared state of one run: the job queue, the events workers send, and the stop signal."""

    def __init__(self, endpoint: RpcEndpoint, work, pinned, settings: FarmSettings):
        self.endpoint, self.work, self.pinned, self.settings = endpoint, work, pinned, settings
        self.jobs: queue.Queue = queue.Queue()  # (job, boards it failed on)
        self.events: queue.Queue = queue.Queue()
        self.finished = threading.Event()
        self.report = FarmReport()

    def settle_events(self, total: int, alive: int, settle, fail) -> ToolchainError | None:
        """Handle workers' events until every worker ended; the error that stops the run, if any."""
        from toolchain.latency.rpc import DeviceLostError

        unsettled, stop = total, None
        while alive:
            try:
                kind, *payload = self.events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "done":
                job, result, address, is_pinned = payload
                settle(job, result, address, is_pinned)
                unsettled -= not is_pinned
            elif kind == "failed":
                fail(*payload)
                unsettled -= 1
            elif kind == "joined":
                self.report.boards.append(payload[0])
            elif kind == "lost":
                address, error = payload
                self.report.lost.append(f"{address}: {_first_line(error)}" if address else _first_line(error))
            elif kind == "stop":
                stop = stop or payload[0]
                self.finished.set()
            elif kind == "retired":
                alive -= 1
            if unsettled == 0:
                self.finished.set()
        if stop is None and unsettled:
            stop = DeviceLostError(
                f"every device with key {self.endpoint.key!r} via tracker {self.endpoint.tracker_host}:"
                f"{self.endpoint.tracker_port} was lost ({'; '.join(self.report.lost) or 'none joined'}); "
                f"{unsettled} configuration(s) not timed (the rows stored stay: run it again to resume)")
        return stop

    def worker(self) -> None:
        board, pinned_done = None, set()
        try:
            board = self._board(None)
            while board is not None and not self.finished.is_set():
                if board.address not in pinned_done:  # a board new to this worker: its own jobs first
                    pinned_done.add(board.address)
                    board = self._pinned_jobs(board)
                    continue
                try:
                    job, failures = self.jobs.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                board = self._one_job(board, job, failures)
        finally:
            if board is not None:
                board.close()
            self.events.put(("retired",))

    def _board(self, failed: Board | None) -> Board | None:
        """A (new) board for this worker, or None when the tracker has none free within the wait."""
        if failed is not None:
            failed.close()
        try:
            board = open_board(self.endpoint, self.settings.wait_s)
        except ToolchainError as error:
            self.events.put(("stop", error))
            return None
        except Exception as error:  # noqa: BLE001 - no board for this worker: it retires, the others go on
            self.events.put(("lost", "", error))
            return None
        self.events.put(("joined", board.address))
        return board

    def _pinned_jobs(self, board: Board) -> Board | None:
        """The jobs this board times itself; a board that fails here is replaced (the rest of them dropped)."""
        for job in self.pinned(board.address):
            try:
                self.events.put(("done", job, self.work(job, board), board.address, True))
            except JobError:
                continue  # the same job from the queue reports its own failure
            except ToolchainError as error:
                self.events.put(("stop", error))
                return None
            except Exception as error:  # noqa: BLE001 - the board failed
                self.events.put(("lost", board.address, error))
                return self._board(board)
        return board

    def _one_job(self, board: Board, job, failures: int) -> Board | None:
        if time.monotonic() - board.opened_at > self.settings.renew_after_s:
            board = self._board(board)
            if board is None:
                self.jobs.put((job, failures))
                return None
        try:
            self.events.put(("done", job, self.work(job, board), board.address, False))
        except JobError as error:
            self.events.put(("failed", job, error.__cause__ or error))
        except ToolchainError as error:
            self.jobs.put((job, failures))
            self.events.put(("stop", error))
            return None
        except Exception as error:  # noqa: BLE001 - the board failed: the job goes back, this worker re-boards
            if failures + 1 >= self.settings.max_board_failures:
                self.events.put(("failed", job, ConnectionError(
                    f"failed on {failures + 1} boards, last {board.address}: {_first_line(error)}")))
            else:
                self.jobs.put((job, failures + 1))
            self.events.put(("lost", board.address, error))
            return self._board(board)
        return board


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
