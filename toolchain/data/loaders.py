"""Data splits and user-provided data (`path/to/file.py:function`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from toolchain.errors import ToolchainError
from toolchain.user_code import call_user_code, describe_exit


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

    result = call_user_code(f"data function {spec}", load_factory(spec))
    if isinstance(result, DataSplits):
        return result
    if not isinstance(result, dict) or not {"calib", "test"} <= set(result):
        raise ToolchainError(f"data function {spec} must return DataSplits or a dict with 'calib' and 'test'")

    def as_dataset(value):
        return value.dataset if isinstance(value, DataLoader) else value

    return DataSplits(as_dataset(result.get("train")), as_dataset(result["calib"]), as_dataset(result["test"]))


def _batches(dataset: Dataset, what: str, batch_size: int = 500):
    """(inputs, labels) batches of a split; a dataset that fails to yield them is one error line."""
    iterator = iter(call_user_code(f"{what}: reading it", DataLoader, dataset, batch_size=batch_size))
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (KeyboardInterrupt, ToolchainError):
            raise
        except BaseException as exc:  # noqa: BLE001 - a user's dataset can fail in any way
            raise ToolchainError(f"{what}: reading it failed: {describe_exit(exc)}") from exc
        if not (isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor)):
            raise ToolchainError(f"{what} must yield (input, label) pairs of tensors")
        yield batch


def check_splits(splits: DataSplits, spec: str) -> DataSplits:
    """Refuse empty splits and inputs with NaN or inf: BatchNorm re-calibrated on NaN gives a model whose every
    output is NaN, and an empty test split an accuracy of 0.00% that means nothing."""
    for split in ("calib", "test"):
        what = f"the {split} split of --data {spec}"
        count = 0
        for inputs, _labels in _batches(getattr(splits, split), what):
            if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
                raise ToolchainError(f"{what} has NaN or infinite inputs; clean the data first")
            count += len(inputs)
        if count == 0:
            raise ToolchainError(f"{what} is empty")
    return splits


def check_data_fits(model, splits: DataSplits, spec: str) -> None:
    """Run the model on the first batch of each split: data of the wrong shape is one error line up front."""
    for split in ("calib", "test"):
        what = f"the {split} split of --data {spec}"
        inputs, _labels = next(_batches(getattr(splits, split), what, batch_size=2))
        try:
            with torch.no_grad():
                model.eval()(inputs)
        except (KeyboardInterrupt, ToolchainError):
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure here means input and model do not fit
            raise ToolchainError(f"the model cannot run on {what} (inputs of shape {tuple(inputs.shape)}): "
                                 f"{describe_exit(exc)}") from exc


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
    return check_splits(load_user_data(spec), spec)
