"""Errors the toolchain reports to users as one clear line."""


class ToolchainError(Exception):
    """Bad input or an unmet requirement; the CLI prints `error: <message>` and exits with code 2."""


class OutdatedArtifactError(ToolchainError):
    """A saved artifact written by an older version that this version cannot read; refit or rebuild it."""
