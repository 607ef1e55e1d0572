"""Embedding agreement and distillation on small synthetic data (fast)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import ToolchainError
from toolchain.embedding_quality import DistillConfig, compare_embeddings, distill_embeddings, nearest_neighbours


def test_identical_embeddings_agree_fully():
    embeddings = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    agreement = compare_embeddings(embeddings, embeddings * 3.0)  # scale does not change direction
    assert agreement.mean_cosine == pytest.approx(1.0, abs=1e-6)
    assert agreement.min_cosine == pytest.approx(1.0, abs=1e-6)
    assert agreement.top1_neighbour_agreement == 1.0 and agreement.sentences == 20


def test_nearest_neighbour_never_picks_itself_and_agreement_counts_changes():
    points = torch.tensor([[1.0, 0.0], [0.95, 0.05], [0.0, 1.0], [0.05, 0.95], [-1.0, 0.0], [-0.95, -0.05]])
    assert nearest_neighbours(points).tolist() == [1, 0, 3, 2, 5, 4]
    moved = points.clone()
    moved[1] = torch.tensor([-0.9, -0.2])  # row 1 leaves row 0 for the third pair, whose own pairing holds
    agreement = compare_embeddings(points, moved)
    assert agreement.top1_neighbour_agreement == pytest.approx(4 / 6)
    assert agreement.min_cosine < agreement.mean_cosine < 1.0


def test_mismatched_shapes_are_refused():
    with pytest.raises(ToolchainError, match="one shape"):
        compare_embeddings(torch.zeros(3, 4), torch.zeros(2, 4))


class _BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.EmbeddingBag(16, 4)

    def forward(self, input_ids):
        return nn.functional.normalize(self.embedding(input_ids), dim=1)


def test_distillation_moves_the_student_towards_the_teacher():
    torch.manual_seed(0)
    sentences = [f"s{i}" for i in range(16)]
    tokens = {s: torch.tensor([i, (i + 3) % 16]) for i, s in enumerate(sentences)}

    def tokenize(batch):
        return {"input_ids": torch.stack([tokens[s] for s in batch])}

    teacher, student = _BagOfWords(), _BagOfWords()
    with torch.no_grad():
        targets = teacher(**tokenize(sentences))
        before = compare_embeddings(targets, student(**tokenize(sentences))).mean_cosine
    report = distill_embeddings(student, targets, sentences, tokenize,
                                DistillConfig(seconds=30.0, max_steps=200, batch_size=8, lr=5e-2))
    with torch.no_grad():
        after = compare_embeddings(targets, student(**tokenize(sentences))).mean_cosine
    assert report.steps == 200 and report.last_loss < report.first_loss
    assert after > max(before, 0.9)
