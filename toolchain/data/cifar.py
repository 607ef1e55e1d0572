"""CIFAR-10 from the standard binary batches in a local folder (no download, no pickle).

The binary format: each record is 1 label byte followed by 3072 bytes (3x32x32, channel-major).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from toolchain.data.loaders import DataSplits
from toolchain.errors import ToolchainError

_RECORD_BYTES = 1 + 3 * 32 * 32
_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)


def _read_batches(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _RECORD_BYTES:
            raise ToolchainError(f"{path} is not a CIFAR-10 binary batch ({raw.size} bytes)")
        chunks.append(raw.reshape(-1, _RECORD_BYTES))
    records = np.concatenate(chunks)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ToolchainError(f"CIFAR-10 labels must be 0..9, found {labels.max()}")
    images = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return torch.from_numpy((images - _MEAN) / _STD), torch.from_numpy(labels)


def load_cifar10(folder: str | Path, calib_size: int = 1000) -> DataSplits:
    """Read `data_batch_1..5.bin` and `test_batch.bin` (the cifar-10-batches-bin folder)."""
    folder = Path(folder)
    train_files = sorted(folder.glob("data_batch_*.bin"))
    test_file = folder / "test_batch.bin"
    if not train_files or not test_file.is_file():
        raise ToolchainError(f"{folder} has no CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin)")
    train_x, train_y = _read_batches(train_files)
    test_x, test_y = _read_batches([test_file])
    calib_size = min(calib_size, len(train_y) // 2)
    return DataSplits(
        TensorDataset(train_x[calib_size:], train_y[calib_size:]),
        TensorDataset(train_x[:calib_size], train_y[:calib_size]),
        TensorDataset(test_x, test_y),
    )
