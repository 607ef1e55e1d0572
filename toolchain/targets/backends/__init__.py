"""One module per backend; each registers itself with `toolchain.targets.register_backend`."""
