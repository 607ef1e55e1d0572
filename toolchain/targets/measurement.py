"""The measurement lock: latency measurements on this machine never overlap.

Every process timing here (a profile, a budget run, a sweep, a benchmark) takes one exclusive `flock` on a
shared file around each measurement, so two timings never compete for the cores. Override the file with
TOOLCHAIN_MEASUREMENT_LOCK. Do not also wrap a run in `flock` on the same file: the run takes the lock
itself around each measurement, and would wait on its own wrapper.

    >>> import os, tempfile
    >>> with measurement_lock(os.path.join(tempfile.mkdtemp(), "bench.lock")):
    ...     pass                                          # time one model here
"""

from __future__ import annotations

import fcntl
import os

MEASUREMENT_LOCK = os.environ.get("TOOLCHAIN_MEASUREMENT_LOCK", "/tmp/toolchain-bench.lock")


class measurement_lock:
    """Holds an exclusive `flock` on the shared lock file while the block runs."""

    def __init__(self, path: str = MEASUREMENT_LOCK):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
