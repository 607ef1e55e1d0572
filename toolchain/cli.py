"""The `toolchain` command line: the group, its commands (one module each in `toolchain.commands`), and the
error handling that turns bad input into one `error:` line with exit code 2."""

from __future__ import annotations

import sys

import click

from toolchain.commands import deploy, export, fit, predict, profile, prune, report, sparsify, sweep, targets, zoo
from toolchain.errors import ToolchainError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="toolchain")
def cli() -> None:
    """Hardware-aware deployment toolchain: measure, prune under a budget, shrink, verify, export."""


# Every command, by name: a module that fails to import fails the CLI instead of dropping its command.
COMMANDS = (prune.prune, deploy.deploy, export.export, zoo.zoo, targets.targets, profile.profile, fit.fit,
            predict.predict, sparsify.sparsify, sweep.sweep, report.report)
for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI, turns `ToolchainError` into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="toolchain", standalone_mode=False)
    except ToolchainError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.UsageError as exc:  # one line, like every other bad input
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (MemoryError, RuntimeError) as exc:
        if not _is_allocation_failure(exc):
            raise
        click.echo(f"error: out of memory ({_first_line(exc)}); use a smaller --input-shape or batch", err=True)
        return 2
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_allocation_failure(exc: BaseException) -> bool:
    """MemoryError, or torch's RuntimeError for a tensor too large to allocate (an input shape out of reach)."""
    return isinstance(exc, MemoryError) or any(
        marker in str(exc) for marker in ("can't allocate memory", "DefaultCPUAllocator", "out of memory"))


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
