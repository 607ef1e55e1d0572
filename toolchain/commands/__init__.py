"""CLI commands, one click.Command per file; `toolchain.cli` registers them."""
