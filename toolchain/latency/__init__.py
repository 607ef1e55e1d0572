"""toolchain.latency."""
