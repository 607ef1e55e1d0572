"""Child processes of a test (to check that servers a test started are gone), through psutil (the tvm extra's,
which the tests using this need anyway)."""

import psutil


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (none once `pid` is gone)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child.pid for child in children if alive(child.pid)]


def alive_descendants(pid: int) -> set[int]:
    return set(descendants(pid))
