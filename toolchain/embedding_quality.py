"""How close a pruned sentence-embedding model stays to its dense teacher, and distillation towards it.

Two measures on the same sentences: the cosine similarity of each sentence's pruned and dense
embeddings (mean and worst), and top-1 nearest-neighbour agreement: for each sentence, whether its
most similar other sentence is the same under both models (retrieval keeps working).

>>> agreement = compare_embeddings(embed(dense, sentences), embed(pruned, sentences))   # doctest: +SKIP
>>> agreement.mean_cosine, agreement.top1_neighbour_agreement                            # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.errors import ToolchainError


@dataclass(frozen=True)
class EmbeddingAgreement:
    mean_cosine: float
    min_cosine: float
    top1_neighbour_agreement: float  # share of sentences whose nearest neighbour is the dense model's
    sentences: int


def nearest_neighbours(embeddings: torch.Tensor) -> torch.Tensor:
    """Index of each row's most cosine-similar other row."""
    unit = nn.functional.normalize(embeddings, dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-float("inf"))
    return similarity.argmax(dim=1)


def compare_embeddings(dense: torch.Tensor, pruned: torch.Tensor) -> EmbeddingAgreement:
    if dense.shape != pruned.shape or dense.shape[0] < 2:
        raise ToolchainError(f"need two embedding matrices of one shape with >= 2 rows, got {tuple(dense.shape)} "
                             f"and {tuple(pruned.shape)}")
    cosine = nn.functional.cosine_similarity(dense, pruned, dim=1)
    agree = (nearest_neighbours(dense) == nearest_neighbours(pruned)).float().mean()
    return EmbeddingAgreement(float(cosine.mean()), float(cosine.min()), float(agree), int(dense.shape[0]))


@dataclass(frozen=True)
class DistillConfig:
    """Bounded by wall time and by steps, whichever ends first (a shared machine's speed varies)."""

    seconds: float = 90.0
    max_steps: int = 10_000
    batch_size: int = 32
    lr: float = 5e-5
    seed: int = 0


@dataclass(frozen=True)
class DistillReport:
    steps: int
    seconds: float
    first_loss: float
    last_loss: float


Tokenize = Callable[[list[str]], dict[str, torch.Tensor]]


def distill_embeddings(student: nn.Module, teacher_embeddings: torch.Tensor, sentences: list[str],
                       tokenize: Tokenize, config: DistillConfig) -> DistillReport:
    """Train `student` so its embeddings of `sentences` match the teacher's (loss: 1 - cosine).

    The teacher's embeddings are computed once by the caller, so the dense model is not run per step.
    """
    if len(sentences) != teacher_embeddings.shape[0]:
        raise ToolchainError(f"{len(sentences)} sentences but {teacher_embeddings.shape[0]} teacher embeddings")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr)
    student.train()  # dropout on, as in sentence-transformers' own training
    start = time.monotonic()
    steps, losses = 0, []
    while steps < config.max_steps and time.monotonic() - start < config.seconds:
        order = torch.randperm(len(sentences), generator=generator)
        for begin in range(0, len(order), config.batch_size):
            batch = order[begin:begin + config.batch_size].tolist()
            produced = student(**tokenize([sentences[i] for i in batch]))
            loss = (1 - nn.functional.cosine_similarity(produced, teacher_embeddings[batch], dim=1)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            steps += 1
            if steps >= config.max_steps or time.monotonic() - start >= config.seconds:
                break
    student.eval()
    return DistillReport(steps, round(time.monotonic() - start, 1), losses[0] if losses else float("nan"),
                         losses[-1] if losses else float("nan"))
