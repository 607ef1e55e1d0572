"""Errors the toolchain reports to users as one clear line."""


class ToolchainError(Exception):
    """Bad input or an unmet requirement; the CLI prints `error: <message>` and exits with code 2."""
