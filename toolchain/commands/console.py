"""What the commands print besides their result: step messages and progress bars, on stderr.

stdout carries a command's result (a manifest, JSON rows), so `--json` output stays parseable while the
steps of a long run still show.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console

stderr = Console(stderr=True)
OnProgress = Callable[[int, int, str], None]


class Steps:
    """Prints each long step as it starts (to stderr, so `--json` output stays clean)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            stderr.print(f"[dim]…[/dim] {message}")


def progress_bar(quiet: bool, title: str = "profiling", unit: str = "") -> OnProgress | None:
    """An `on_progress(done, total, what)` drawing a rich progress bar on stderr: "profiling" configurations
    (the predictor built on the fly), "recovering" seconds of distillation. None (no bar) when `quiet`."""
    if quiet:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    state: dict = {}
    counted = TextColumn(f"{{task.completed:.0f}}/{{task.total:.0f}} {unit}") if unit else MofNCompleteColumn()

    def on_progress(done: float, total: float, what: str) -> None:
        if "bar" not in state:
            state["bar"] = Progress(TextColumn(f"{title} {{task.description}}"), BarColumn(), counted,
                                    TimeRemainingColumn(), console=stderr)
            state["bar"].start()
            state["task"] = state["bar"].add_task(what, total=total)
        state["bar"].update(state["task"], completed=done, total=total, description=what)
        if done >= total:
            state.pop("bar").stop()

    return on_progress


def recovery_bar(quiet: bool, seconds_bounded: bool = True) -> OnProgress | None:
    """Recovery's progress on stderr: seconds (or steps) of distillation, steps and calibration accuracy."""
    return progress_bar(quiet, "recovering:", "s" if seconds_bounded else "steps")


@contextlib.contextmanager
def library_output_to_stderr() -> Iterator[None]:
    """Send what libraries print on stdout to stderr while the block runs.

    Torch-Pruning warns about keyword inputs and Ultralytics prints banners on stdout; stdout is for the
    manifest, so `--json` output stays parseable.
    """
    with contextlib.redirect_stdout(sys.stderr):
        yield
