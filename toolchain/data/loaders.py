"""Data splits and user-provided data (`path/to/file.py:function`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from toolchain.errors import ToolchainError


@dataclass(frozen=True)
class DataSplits:
    """Train / calibration / test datasets of (input, label) pairs; train may be None."""

    train: Dataset | None
    calib: Dataset
    test: Dataset

    def loader(self, split: str, batch_size: int = 256, shuffle: bool = False) -> DataLoader:
        dataset = getattr(self, split)
        if dataset is None:
            raise ToolchainError(f"this data has no {split!r} split")
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


def load_user_data(spec: str) -> DataSplits:
    """Call a user's `file.py:function`; it returns a `DataSplits` or a dict with calib/test(/train).

    The values may be datasets or DataLoaders (their `.dataset` is used).
    """
    from toolchain.models import load_factory

    result = load_factory(spec)()
    if isinstance(result, DataSplits):
        return result
    if not isinstance(result, dict) or not {"calib", "test"} <= set(result):
        raise ToolchainError(f"data function {spec} must return DataSplits or a dict with 'calib' and 'test'")

    def as_dataset(value):
        return value.dataset if isinstance(value, DataLoader) else value

    return DataSplits(as_dataset(result.get("train")), as_dataset(result["calib"]), as_dataset(result["test"]))


def resolve_data(spec: str | None, model_spec: str | None = None) -> DataSplits | None:
    """`mnist5k`, `cifar10:DIR`, `file.py:function`, or None (the demo model defaults to MNIST-5k)."""
    from toolchain.data.cifar import load_cifar10
    from toolchain.data.mnist import load_mnist5k

    if spec is None:
        return load_mnist5k() if model_spec == "zoo:demo" else None
    if spec == "mnist5k":
        return load_mnist5k()
    if spec.startswith("cifar10:"):
        return load_cifar10(spec[len("cifar10:"):])
    if spec in ("none", ""):
        return None
    return load_user_data(spec)
