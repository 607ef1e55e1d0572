"""ADMM on the demo model (MNIST-5k): accuracy dense, after one-shot magnitude projection,
and after ADMM + fine-tuning, for one micro-structured pattern.

Usage: ``python -m benchmarks.admm_demo --pattern 2:4`` (``--pattern block4x4 --sparsity 0.8``,
``--pattern unify2x2 --sparsity 0.5``). Writes ``benchmarks/results/admm-demo-<pattern>.json``.
Needs ``toolchain.models`` (zoo:demo with its shipped weights) and ``toolchain.data.mnist``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from toolchain.kernels.admm import AdmmConfig, accuracy, admm_train_
from toolchain.kernels.patterns import Pattern
from toolchain.kernels.sparsify import SparsifyConfig, apply_pattern_, sparsify_

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="2:4")
    parser.add_argument("--sparsity", type=float, default=None)
    parser.add_argument("--admm-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--rho", type=float, default=1e-2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    Pattern.parse(args.pattern)
    from toolchain.data.mnist import load_mnist5k
    from toolchain.models import resolve_model

    torch.manual_seed(args.seed)

    model, _ = resolve_model("zoo:demo")
    model = model.float()
    splits = load_mnist5k(seed=args.seed)
    train = DataLoader(
        splits.train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
    )
    test = DataLoader(splits.test, batch_size=256)

    dense_accuracy = accuracy(model, test)
    one_shot = copy.deepcopy(model)
    apply_pattern_(one_shot, SparsifyConfig(pattern=args.pattern, sparsity=args.sparsity))
    one_shot_accuracy = accuracy(one_shot, test)

    config = AdmmConfig(
        pattern=args.pattern,
        sparsity=args.sparsity,
        rho=args.rho,
        admm_epochs=args.admm_epochs,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
    )
    start = time.perf_counter()
    report = admm_train_(model, train, config)
    train_seconds = time.perf_counter() - start
    admm_accuracy = accuracy(model, test)

    # The ADMM weights run unchanged on the sparse kernels (CPU, float32).
    sparse = copy.deepcopy(model)
    sparsify_(sparse, SparsifyConfig(pattern=args.pattern, sparsity=args.sparsity, prune=False))
    sparse_accuracy = accuracy(sparse, test)

    result = {
        "command": "python -m benchmarks.admm_demo "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out_dir"),
        "pattern": args.pattern,
        "sparsity": args.sparsity,
        "config": vars(args) | {"out_dir": None},
        "layers": report.layers,
        "test_accuracy": {
            "dense": dense_accuracy,
            "one_shot_projection": one_shot_accuracy,
            "admm": admm_accuracy,
            "admm_on_sparse_kernels": sparse_accuracy,
        },
        "primal_residuals": report.primal_residuals,
        "train_losses": report.train_losses,
        "train_seconds": train_seconds,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    slug = args.pattern.replace(":", "-") + (f"-{args.sparsity:g}" if args.sparsity is not None else "")
    path = args.out_dir / f"admm-demo-{slug}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["test_accuracy"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
