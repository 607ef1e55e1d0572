"""GPU sparse kernels in Triton, each beside its PyTorch reference (Triton is imported here only)."""
