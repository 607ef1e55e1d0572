"""Edge-CPU sparse kernels (C++ via torch.utils.cpp_extension), each beside its PyTorch reference."""
