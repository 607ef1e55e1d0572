"""CLI commands that live in their own modules; `toolchain.cli` registers them."""
