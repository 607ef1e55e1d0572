"""ADMM training for micro-structured patterns (N:M, blocks, stripes, weight unification).

The constrained problem ``min loss(W) s.t. W in S`` (S: the pattern's set) is split as
``min loss(W) + g(Z) s.t. W = Z``. Each round alternates

1. a gradient step on ``loss(W) + rho/2 * ||W - Z + U||^2`` (``admm_epochs`` epochs of SGD/Adam),
2. the projection ``Z = project(W + U)`` onto S (``toolchain.kernels.patterns.project``),
3. the dual update ``U = U + W - Z``,

then ``W`` is projected once more and fine-tuned on its fixed support (for unification:
with each block's shared value). The penalty pulls the weights towards the pattern during
training instead of cutting them at once, which is what keeps accuracy at high compression.

Example:
    >>> config = AdmmConfig(pattern="2:4", admm_epochs=2, finetune_epochs=1)
    >>> report = admm_train_(model, train_loader, config)        # doctest: +SKIP
    >>> report.layers, report.primal_residuals[-1]              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from toolchain.kernels.patterns import Pattern, block_of, block_scores_sum, from_gemm_view, gemm_view, project
from toolchain.kernels.sparsify import SparsifyConfig, eligible_layers


@dataclass(frozen=True)
class AdmmConfig:
    """ADMM schedule. ``rho``: penalty weight, multiplied by ``rho_growth`` after every
    round (the usual schedule: loose at first, then tight); ``lr``: Adam step size; one Z/U update per epoch;
    ``min_features``: as in ``SparsifyConfig`` (smaller layers stay dense)."""

    pattern: str = "2:4"
    sparsity: float | None = None
    min_features: int = 8
    rho: float = 1e-2
    rho_growth: float = 2.0
    admm_epochs: int = 4
    finetune_epochs: int = 2
    lr: float = 1e-3


@dataclass
class AdmmReport:
    """What happened: the constrained layers and ``||W - Z|| / ||W||`` after each round."""

    layers: list[str]
    primal_residuals: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)


Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _support_projection(weight: torch.Tensor, pattern: Pattern) -> Callable[[torch.Tensor], torch.Tensor]:
    """Projection onto the fixed support of the (already projected) ``weight``."""
    keep = weight.ne(0)
    if pattern.kind != "unify":
        return lambda w: w * keep
    block = block_of(pattern, weight)
    keep_view = gemm_view(keep).float()
    counts = block_scores_sum(torch.ones_like(keep_view), block)

    def shared_value(w: torch.Tensor) -> torch.Tensor:
        means = block_scores_sum(gemm_view(w).float(), block) / counts
        rows, cols = block
        dense = means.repeat_interleave(rows, 0).repeat_interleave(cols, 1)
        dense = dense[: keep_view.shape[0], : keep_view.shape[1]] * keep_view
        return from_gemm_view(dense.to(w.dtype), w.shape)

    return shared_value


def _epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer,
           penalty: Callable[[], torch.Tensor] | None, after_step: Callable[[], None] | None,
           loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    model.train()
    total, count = 0.0, 0
    for inputs, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        objective = loss + penalty() if penalty is not None else loss
        objective.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * len(labels)
        count += len(labels)
    return total / max(count, 1)


def admm_train_(model: nn.Module, batches: Batches, config: AdmmConfig,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                filter_fn: Callable[[nn.Module, str], bool] | None = None) -> AdmmReport:
    """Trains ``model`` in place until its eligible layers follow ``config.pattern``.

    ``batches`` is re-iterated every epoch (a ``DataLoader`` works). Afterwards the weights
    lie exactly in the pattern's set, ready for ``sparsify_(model, SparsifyConfig(..., prune=False))``.
    """
    pattern = Pattern.parse(config.pattern)
    selection = SparsifyConfig(pattern=config.pattern, sparsity=config.sparsity,
                               min_features=config.min_features)
    names = eligible_layers(model, selection, filter_fn)
    if not names:
        raise ValueError(f"no layer of the model is eligible for the {pattern} pattern")
    modules = dict(model.named_modules())
    weights = [modules[name].weight for name in names]
    report = AdmmReport(layers=names)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    with torch.no_grad():
        targets = [project(w, pattern, config.sparsity) for w in weights]  # Z
        duals = [torch.zeros_like(w) for w in weights]  # U

    rho = config.rho

    def penalty() -> torch.Tensor:
        pairs = zip(weights, targets, duals, strict=True)
        return sum(0.5 * rho * (w - z + u).pow(2).sum() for w, z, u in pairs)

    for _ in range(config.admm_epochs):
        report.train_losses.append(_epoch(model, batches, optimizer, penalty, None, loss_fn))
        with torch.no_grad():
            residual, norm = 0.0, 0.0
            for w, z, u in zip(weights, targets, duals, strict=True):
                z.copy_(project(w + u, pattern, config.sparsity))
                u.add_(w - z)
                residual += float((w - z).pow(2).sum())
                norm += float(w.pow(2).sum())
            report.primal_residuals.append((residual / max(norm, 1e-12)) ** 0.5)
            # Scaled dual: U holds (dual variable / rho), so it shrinks when rho grows.
            for u in duals:
                u.div_(config.rho_growth)
        rho *= config.rho_growth

    with torch.no_grad():
        for w in weights:
            w.copy_(project(w, pattern, config.sparsity))
        constraints = [_support_projection(w.detach().clone(), pattern) for w in weights]

    def restore() -> None:
        with torch.no_grad():
            for w, constrain in zip(weights, constraints, strict=True):
                w.copy_(constrain(w))

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.finetune_epochs):
        report.train_losses.append(_epoch(model, batches, optimizer, None, restore, loss_fn))
    model.eval()
    return report


@torch.no_grad()
def accuracy(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``batches``."""
    model.eval()
    correct, count = 0, 0
    for inputs, labels in batches:
        correct += int(model(inputs).argmax(dim=1).eq(labels).sum())
        count += len(labels)
    return correct / max(count, 1)
