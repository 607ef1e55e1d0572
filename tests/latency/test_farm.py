"""The device farm's scheduling with fake boards (no TVM, no network): every job settled once, a failed board's
job given back, a job that breaks boards given up, pinned jobs on every board; and the board-spread summary."""

import threading

import pytest

from toolchain.errors import ToolchainError
from toolchain.latency import farm, rpc
from toolchain.latency.farm import Board, FarmSettings, JobError, NoBoardError, run_farm
from toolchain.latency.fingerprint import DEVICE_KEY, device_of, fingerprint_id
from toolchain.latency.rpc import DeviceLostError
from toolchain.latency.spread import board_offset, board_spread
from toolchain.latency.store import DeviceTiming, MeasurementStore
from toolchain.targets import RpcEndpoint

ENDPOINT = RpcEndpoint("127.0.0.1", 1, "fake-board")
QUICK = FarmSettings(wait_s=0.1)


class FakeBoard(Board):
    def close(self) -> None:
        self.session = None  # no RPC session to collect (Board.close runs the garbage collector: ~1 s)


class FakeTracker:
    """Hands out each board once; a board that failed never comes back (it is gone)."""

    def __init__(self, addresses):
        self.free, self.lock = list(addresses), threading.Lock()

    def open_board(self, endpoint, wait_s):
        with self.lock:
            if self.free:
                return FakeBoard(self.free.pop(0), session=object())
        raise NoBoardError(f"no free board with key {endpoint.key!r} within {wait_s:g} s")


@pytest.fixture
def tracker(monkeypatch):
    def install(addresses, free_at_start=-1):
        """`free_at_start`: what the tracker's summary says (default: every board; None: a key it never saw)."""
        fake = FakeTracker(addresses)
        free = len(addresses) if free_at_start == -1 else free_at_start
        monkeypatch.setattr(farm, "free_boards", lambda endpoint: free)
        monkeypatch.setattr(farm, "open_board", fake.open_board)
        monkeypatch.setattr(rpc, "tracker_unreachable_reason", lambda endpoint: None)
        return fake

    return install


class Recorder:
    """The settle/fail callbacks of a farm run, and what they saw."""

    def __init__(self):
        self.settled, self.pinned, self.failed = [], [], []

    def settle(self, job, result, address, is_pinned):
        assert result == (job, address)  # the result comes from the board that timed the job
        (self.pinned if is_pinned else self.settled).append((job, address))

    def fail(self, job, error):
        self.failed.append((job, str(error)))


def both_boards_start(boards=2):
    """A `work` whose first job on each board waits until every board has one (so every board takes part)."""
    barrier, started = threading.Barrier(boards, timeout=10), set()

    def first_wait(job, board):
        if board.address not in started:
            started.add(board.address)
            barrier.wait()

    return first_wait


def test_every_job_is_settled_once_and_every_board_works(tracker):
    tracker(["a:1", "b:2"])
    first_wait, seen = both_boards_start(), Recorder()

    def work(job, board):
        first_wait(job, board)
        return job, board.address

    report = run_farm(ENDPOINT, list(range(10)), work, seen.settle, seen.fail, settings=QUICK)
    assert sorted(job for job, _ in seen.settled) == list(range(10))
    assert {address for _, address in seen.settled} == {"a:1", "b:2"}
    assert sorted(report.boards) == ["a:1", "b:2"] and report.lost == [] and seen.failed == []


def test_a_board_that_fails_gives_its_job_back_and_the_others_finish(tracker):
    tracker(["a:1", "b:2"])
    first_wait, seen, jobs_on_b = both_boards_start(), Recorder(), []

    def work(job, board):
        first_wait(job, board)
        if board.address == "b:2":
            jobs_on_b.append(job)
            if len(jobs_on_b) == 2:
                raise ConnectionError("connection reset by peer")
        return job, board.address

    report = run_farm(ENDPOINT, list(range(8)), work, seen.settle, seen.fail, settings=QUICK)
    assert sorted(job for job, _ in seen.settled) == list(range(8))  # nothing lost, nothing twice
    assert (jobs_on_b[1], "a:1") in seen.settled  # the job b was timing when it failed, timed by a
    assert [address for _, address in seen.settled].count("b:2") == 1
    assert report.lost[0] == "b:2: ConnectionError: connection reset by peer"


def test_a_job_that_breaks_every_board_it_meets_is_given_up_and_the_rest_go_on(tracker):
    tracker(["a:1", "b:2", "c:3"])
    seen = Recorder()

    def work(job, board):
        if job == "bad":
            raise ConnectionError("board crashed")
        return job, board.address

    jobs = ["bad", *range(6)]
    run_farm(ENDPOINT, jobs, work, seen.settle, seen.fail, settings=FarmSettings(wait_s=0.1, max_board_failures=2))
    assert sorted(job for job, _ in seen.settled) == list(range(6))
    assert len(seen.failed) == 1 and seen.failed[0][0] == "bad" and "failed on 2 boards" in seen.failed[0][1]


def test_a_job_that_fails_to_build_is_reported_and_keeps_its_board(tracker):
    tracker(["a:1"])
    seen = Recorder()

    def work(job, board):
        if job == 2:
            raise JobError("shrink failed") from ValueError("widths out of range")
        return job, board.address

    report = run_farm(ENDPOINT, list(range(4)), work, seen.settle, seen.fail, settings=QUICK)
    assert seen.failed == [(2, "widths out of range")]
    assert sorted(job for job, _ in seen.settled) == [0, 1, 3] and report.lost == []


def test_when_every_board_is_lost_the_campaign_stops_saying_what_is_left(tracker):
    tracker(["a:1", "b:2"])
    seen = Recorder()

    def work(job, board):
        raise ConnectionError("connection refused")

    with pytest.raises(DeviceLostError, match=r"every device with key 'fake-board'.*3 configuration\(s\) not timed"):
        run_farm(ENDPOINT, [0, 1, 2], work, seen.settle, seen.fail, settings=QUICK)
    assert seen.settled == []


def test_a_toolchain_error_stops_the_farm(tracker):
    tracker(["a:1", "b:2"])
    seen = Recorder()

    def work(job, board):
        raise ToolchainError("measurement database is locked")

    with pytest.raises(ToolchainError, match="locked"):
        run_farm(ENDPOINT, list(range(4)), work, seen.settle, seen.fail, settings=QUICK)


def test_pinned_jobs_are_timed_on_every_board(tracker):
    tracker(["a:1", "b:2"])
    first_wait, seen = both_boards_start(), Recorder()

    def work(job, board):
        first_wait(job, board)
        return job, board.address

    run_farm(ENDPOINT, list(range(4)), work, seen.settle, seen.fail, pinned=lambda address: ["p0", "p1"],
             settings=QUICK)
    assert sorted(seen.pinned) == [("p0", "a:1"), ("p0", "b:2"), ("p1", "a:1"), ("p1", "b:2")]
    assert sorted(job for job, _ in seen.settled) == list(range(4))


def test_a_board_that_replaces_a_failed_one_times_its_own_pinned_jobs(tracker):
    tracker(["a:1", "spare:2"], free_at_start=1)  # one worker; the spare board answers its second request
    seen = Recorder()

    def work(job, board):
        if board.address == "a:1":
            raise ConnectionError("board rebooted")
        return job, board.address

    report = run_farm(ENDPOINT, [0, 1], work, seen.settle, seen.fail, pinned=lambda address: ["p0", "p1"],
                      settings=QUICK)
    assert seen.pinned == [("p0", "spare:2"), ("p1", "spare:2")]
    assert sorted(seen.settled) == [(0, "spare:2"), (1, "spare:2")]
    assert report.boards == ["a:1", "spare:2"] and report.lost == ["a:1: ConnectionError: board rebooted"]


def test_a_key_the_tracker_never_saw_is_one_clear_error(tracker):
    tracker([], free_at_start=None)
    with pytest.raises(ToolchainError, match="has no device with key 'fake-board'"):
        run_farm(ENDPOINT, [0], lambda job, board: None, Recorder().settle, Recorder().fail, settings=QUICK)


def test_when_every_board_is_busy_one_worker_waits_for_one(tracker):
    tracker(["a:1"], free_at_start=0)  # busy at the summary, free by the time the worker asks
    seen = Recorder()
    run_farm(ENDPOINT, [0, 1], lambda job, board: (job, board.address), seen.settle, seen.fail, settings=QUICK)
    assert sorted(seen.settled) == [(0, "a:1"), (1, "a:1")]


def test_boards_of_one_kind_share_an_identity_and_rows_name_their_board():
    facts = {"target": "cpu", "device": "rpc:jetson"}
    board_a, board_b = {**facts, DEVICE_KEY: "10.0.0.7:9091"}, {**facts, DEVICE_KEY: "10.0.0.8:9091"}
    assert fingerprint_id(board_a) == fingerprint_id(board_b) == fingerprint_id(facts)
    assert device_of(board_a) == "10.0.0.7:9091" and device_of(facts) == ""


def test_per_board_timings_are_stored_once_per_board(tmp_path):
    with MeasurementStore(tmp_path / "farm.db") as store:
        assert store.insert_device_timing(DeviceTiming("k1", "a:1", "f", 1.0, 0.9))
        assert not store.insert_device_timing(DeviceTiming("k1", "a:1", "f", 2.0, 1.9))  # already there
        assert store.insert_device_timing(DeviceTiming("k1", "b:2", "f", 1.1, 1.0))
        assert store.insert_device_timing(DeviceTiming("k1", "c:3", "other-kind", 5.0, 5.0))
        assert [(t.device, t.min_ms) for t in store.device_timings("f")] == [("a:1", 0.9), ("b:2", 1.0)]


def _timings(slow_board_factor):
    """Ten configurations on boards a and b; b slower by `slow_board_factor`, with +-1% alternating noise."""
    timings = []
    for i in range(10):
        base, noise = 1.0 + 0.1 * i, 0.01 if i % 2 else -0.01
        timings.append(DeviceTiming(f"k{i}", "a:1", "f", base, base))
        slow = base * slow_board_factor * (1 + noise)
        timings.append(DeviceTiming(f"k{i}", "b:2", "f", slow, slow))
    return timings


def test_the_spread_names_each_boards_offset_and_whether_it_matters():
    spread = board_spread(_timings(1.06), "min")
    assert spread["configs"] == 10 and spread["statistic"] == "min"
    assert spread["offsets"]["b:2"] == pytest.approx(0.03, abs=0.006)
    assert spread["offsets"]["a:1"] == pytest.approx(-0.03, abs=0.006)
    assert spread["spread"] == pytest.approx(0.06, abs=0.012) and spread["matters"]
    assert board_offset(spread, "b:2") == spread["offsets"]["b:2"]


def test_boards_that_differ_only_by_noise_do_not_matter():
    spread = board_spread(_timings(1.0), "min")
    assert not spread["matters"] and board_offset(spread, "b:2") == 0.0
    assert spread["intervals_95"]["b:2"][0] < 0 < spread["intervals_95"]["b:2"][1]


def test_one_board_has_no_spread():
    assert board_spread([DeviceTiming("k", "a:1", "f", 1.0, 1.0)]) == {}
    assert board_offset({}, "a:1") == 0.0
