"""Calling code the user wrote (a model factory, a data function): any way it ends that is not a result
becomes one `ToolchainError` line.

`sys.exit(0)` inside a factory raises `SystemExit`, which `except Exception` does not catch: the command then
ended with exit code 0 and nothing written, as if it had succeeded. A real Ctrl-C (KeyboardInterrupt) still
stops the command as an interrupt.

>>> call_user_code("factory m.py:make", lambda: 42)
42
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from toolchain.errors import ToolchainError

T = TypeVar("T")


def describe_exit(exc: BaseException) -> str:
    """`SystemExit: 0` rather than a bare `0`, so the line says the user's code tried to end the program."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def call_user_code(what: str, function: Callable[..., T], *args, **kwargs) -> T:
    """`function(*args, **kwargs)`; whatever it raises (SystemExit included, KeyboardInterrupt excepted) is
    reported as `ToolchainError("<what> failed: ...")`."""
    try:
        return function(*args, **kwargs)
    except (KeyboardInterrupt, ToolchainError):
        raise
    except BaseException as exc:  # noqa: BLE001 - user code may end in any way, sys.exit included
        raise ToolchainError(f"{what} failed: {describe_exit(exc)}") from exc
