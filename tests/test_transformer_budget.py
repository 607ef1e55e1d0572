"""Budget search over feed-forward widths on a tiny random BERT, timed by a fake latency (fast)."""

from __future__ import annotations

import pytest
import torch

from toolchain.models.minilm import SentenceEmbedder
from toolchain.transformer_pruning import BudgetSearchConfig, TransformerPruneConfig, prune_transformer_to_budget

transformers = pytest.importorskip("transformers", reason="needs transformers")

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


def test_search_finds_the_least_pruned_model_within_the_budget():
    dense = _tiny_bert()
    search = prune_transformer_to_budget(dense, _inputs(), BudgetSearchConfig(budget_ms=80.0, max_tries=6),
                                         _fake_latency_ms, TransformerPruneConfig())
    assert search.measured_latency_ms is not None and search.measured_latency_ms <= 80.0
    assert len(search.tries) <= 6 and search.tries[0]["feed_forward_ratio"] == 0.95
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
