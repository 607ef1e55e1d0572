"""Train the bundled demo model on MNIST-5k (CPU, fixed seed) and write its safetensors checkpoint.

Run with `make demo-model`. The result is shipped in the repository so users need not train.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from toolchain.data import load_mnist5k
from toolchain.evaluate import accuracy
from toolchain.models import DEMO_WEIGHTS, create_model


def _shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels: cheap augmentation for a 3,500-image set."""
    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(2, 3))


def train(epochs: int = 12, seed: int = 0, batch_size: int = 64, lr: float = 2e-3) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    torch.set_num_threads(2)  # fixed thread count: reproducible reductions
    splits = load_mnist5k(seed=seed)
    model = create_model("demo").train()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    started = time.time()
    for epoch in range(epochs):
        model.train()
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(_shift(images, generator)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f} calib acc {accuracy(model, splits.calib):.4f}")
    model.eval()
    info = {"epochs": epochs, "seed": seed, "train_seconds": round(time.time() - started, 1),
            "test_accuracy": accuracy(model, splits.test), "calib_accuracy": accuracy(model, splits.calib)}
    return model, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=DEMO_WEIGHTS)
    args = parser.parse_args()
    model, info = train(args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
