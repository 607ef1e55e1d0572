"""Attention pruned by whole heads, verified against the masked dense model, or refused by name.

One builder per family (small configs, random weights). Each prune at ratio 0.5 must remove
parameters, keep every output shape, leave head counts consistent with the projections, pass
the graph's equivalence check (its error is in the manifest: proof that the check ran) and
run on a new random input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import PruningGraph, ToolchainError, prune
from toolchain.graph_attention import AttentionHeads, find_attention_heads
from toolchain.inputs import call_model, flatten_outputs, output_shapes

timm = pytest.importorskip("timm", reason="timm is not installed")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")


class TinyMHA(nn.Module):
    """A transformer block around nn.MultiheadAttention."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(h + self.ffn(h))


def _tokens(vocab: int = 100, length: int = 16) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.randint(0, vocab, (1, length))}


def _image(size: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, size, size)


def _timm_vit():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                             init_values=1e-2), _image()


def _timm_deit():
    return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2), _image()


def _timm_swin():
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, depths=(2, 2),
                             num_heads=(2, 4), embed_dim=32, window_size=7), _image(56)


def _hf_bert():
    config = transformers.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(config), _tokens()


def _hf_bert_eager():
    """Eager attention (as zoo:minilm loads it) also returns per-head attention weights from each layer."""
    config = transformers.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, vocab_size=100, max_position_embeddings=64,
                                     attn_implementation="eager")
    return transformers.BertModel(config), _tokens()


def _hf_vit():
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, image_size=32, patch_size=8)
    return transformers.ViTModel(config), _image()


def _hf_swin():
    config = transformers.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                     window_size=4)
    return transformers.SwinModel(config), _image()


def _hf_segformer():
    config = transformers.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                                          num_attention_heads=[2, 4], patch_sizes=[7, 3], strides=[4, 2],
                                          mlp_ratios=[2, 2])
    return transformers.SegformerModel(config), _image()


def _hf_whisper_encoder():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = transformers.WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                                        num_mel_bins=16, max_source_positions=16)
    return WhisperEncoder(config), torch.randn(1, 16, 32)


def _hf_mobilevit():
    config = transformers.MobileViTConfig(image_size=32, hidden_sizes=[32, 48, 64], num_attention_heads=4,
                                          neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64])
    return transformers.MobileViTModel(config), _image()


def _hf_llama_gqa():
    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                      max_position_embeddings=64)
    return transformers.LlamaModel(config), _tokens()


def _hf_gpt2():
    config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2Model(config), _tokens()


# family -> (builder, {attention module path: (query heads, key/value heads) after ratio 0.5})
FAMILIES = {
    "timm_vit": (_timm_vit, {"blocks.0.attn": (2, 2), "blocks.1.attn": (2, 2)}),
    "timm_deit": (_timm_deit, {"blocks.0.attn": (2, 2), "blocks.1.attn": (2, 2)}),
    "timm_swin": (_timm_swin, {"layers.0.blocks.0.attn": (1, 1), "layers.1.blocks.1.attn": (2, 2)}),
    "hf_bert": (_hf_bert, {"encoder.layer.0.attention.self": (2, 2), "encoder.layer.1.attention.self": (2, 2)}),
    "hf_bert_eager": (_hf_bert_eager, {"encoder.layer.0.attention.self": (2, 2),
                                       "encoder.layer.1.attention.self": (2, 2)}),
    "hf_vit": (_hf_vit, {"layers.0.attention": (2, 2), "layers.1.attention": (2, 2)}),
    "hf_swin": (_hf_swin, {"encoder.layers.0.blocks.0.attention": (1, 1),
                           "encoder.layers.1.blocks.0.attention": (2, 2)}),
    "hf_segformer": (_hf_segformer, {"stages.0.blocks.0.attention": (1, 1), "stages.1.blocks.0.attention": (2, 2)}),
    "hf_whisper_encoder": (_hf_whisper_encoder, {"layers.0.self_attn": (2, 2), "layers.1.self_attn": (2, 2)}),
    "hf_mobilevit": (_hf_mobilevit, {"encoder.layer.4.transformer.layer.0.attention.attention": (2, 2)}),
    "hf_llama_gqa": (_hf_llama_gqa, {"layers.0.self_attn": (2, 1), "layers.1.self_attn": (2, 1)}),
    "hf_gpt2": (_hf_gpt2, {"h.0.attn": (2, 2), "h.1.attn": (2, 2)}),
}


def _heads_by_path(model: nn.Module) -> dict[str, AttentionHeads]:
    """Re-read every attention module from its attributes: this raises on counts that disagree with widths."""
    found, refused = find_attention_heads(model)
    assert not refused, refused
    return {heads.path: heads for heads in found}


SLOW_FAMILIES = {"hf_mobilevit"}  # its convolutional stages dominate: ~15 s on 2 cores


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f
                                    for f in sorted(FAMILIES)])
def test_attention_is_pruned_by_whole_heads_and_verified(family):
    torch.manual_seed(0)
    build, expected_heads = FAMILIES[family]
    model, inputs = build()
    model.eval()
    dense_heads = _heads_by_path(model)
    with torch.no_grad():
        dense_shapes = output_shapes(call_model(model, inputs))

    result = prune(model, inputs, ratio=0.5)

    manifest = result.manifest
    assert manifest["params"] < manifest["dense_params"]
    error = manifest["verified_relative_error"]
    assert error is not None and error < 1e-4, "the pruned model was checked against the masked dense model"
    pruned_heads = _heads_by_path(result.model)
    for path, (heads, kv_heads) in expected_heads.items():
        after, before = pruned_heads[path], dense_heads[path]
        assert (after.num_heads, after.num_kv_heads) == (heads, kv_heads), path
        assert after.head_dim == before.head_dim and after.group_size == before.group_size
        assert after.output_in_width() == heads * after.head_dim
    new_inputs = {k: torch.randint_like(v, 0, 100) for k, v in inputs.items()} if isinstance(inputs, dict) \
        else torch.randn_like(inputs)
    with torch.no_grad():
        assert output_shapes(call_model(result.model, new_inputs)) == dense_shapes
    assert output_shapes(call_model(result.model, inputs)) == dense_shapes


@pytest.mark.slow  # six prunes
def test_head_attributes_are_updated_where_forward_reads_them():
    model, inputs = _hf_bert()
    pruned = prune(model.eval(), inputs, ratio=0.5).model
    attention = pruned.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (2, 32, 64)
    assert attention.query.out_features == attention.key.out_features == attention.value.out_features == 64
    assert pruned.encoder.layer[0].attention.output.dense.in_features == 64

    model, inputs = _hf_gpt2()
    attention = prune(model.eval(), inputs, ratio=0.5).model.h[0].attn
    assert (attention.num_heads, attention.split_size, attention.c_attn.nf) == (2, 32, 96)
    assert attention.c_proj.weight.shape == (32, 64)

    model, inputs = _timm_swin()
    attention = prune(model.eval(), inputs, ratio=0.5).model.layers[1].blocks[0].attn
    assert attention.num_heads == 2 and attention.relative_position_bias_table.shape[1] == 2

    model, inputs = _hf_swin()
    attention = prune(model.eval(), inputs, ratio=0.5).model.encoder.layers[1].blocks[0].attention
    assert attention.num_attention_heads == 2
    assert attention.relative_position_bias.relative_position_bias_table.shape[1] == 2

    model, inputs = _hf_mobilevit()
    attention = prune(model.eval(), inputs, ratio=0.5).model.encoder.layer[4].transformer.layer[0].attention.attention
    assert (attention.num_attention_heads, attention.all_head_size) == (2, 32)

    model, inputs = _timm_vit()
    attention = prune(model.eval(), inputs, ratio=0.5).model.blocks[0].attn
    assert (attention.num_heads, attention.attn_dim, attention.qkv.out_features) == (2, 128, 384)


def test_grouped_query_attention_removes_key_value_heads_with_their_query_group():
    model, inputs = _hf_llama_gqa()
    graph = PruningGraph(model.eval(), inputs)
    group = graph.group("layers.0.self_attn.q_proj")
    assert (group.kind, group.width, group.unit) == ("heads", 64, 32), "one unit = one kv head's 2 query heads"
    with pytest.raises(ToolchainError, match="whole number of heads"):
        graph.shrink({group.name: 48})
    attention = model.layers[0].self_attn
    keep_q = attention.q_proj.weight[32:].clone()  # kv head 1 and its query heads 2, 3
    graph.shrink({group.name: 32}, scores={group.name: torch.arange(64.0)})
    assert torch.equal(attention.q_proj.weight, keep_q)
    assert attention.k_proj.out_features == attention.v_proj.out_features == 16
    assert attention.o_proj.in_features == 32 and attention.num_key_value_groups == 2
    assert graph.verified_error is not None and graph.verified_error < 1e-4


def test_residual_width_through_layernorm_is_verified_not_skipped():
    model, inputs = _timm_vit()
    graph = PruningGraph(model.eval(), inputs)
    residual = graph.group("blocks.1.mlp.fc2")  # the residual stream: norm1/norm2/norm and layer-scale gammas
    assert {"blocks.1.norm1", "norm"} <= set(residual.layers)
    graph.shrink({residual.name: 96})
    assert model.norm.weight.shape == (96,) and model.blocks[0].ls1.gamma.shape == (96,)
    assert graph.verified_error is not None and graph.verified_error < 1e-4


def test_mixed_heads_are_caught_by_the_check(monkeypatch):
    """The old BERT failure: q/k/v narrowed channel by channel across heads, head count kept."""
    model, inputs = _hf_bert()
    graph = PruningGraph(model.eval(), inputs)
    heads = next(h for h in graph._heads.values() if h.path == "encoder.layer.0.attention.self")
    spread = list(range(0, heads.width, 2))  # half of every head's channels: shapes fit, heads mix

    monkeypatch.setattr(AttentionHeads, "output_drops", lambda self, kv: {layer: spread for layer in self.producers()})
    monkeypatch.setattr(AttentionHeads, "input_drops", lambda self, kv: spread)
    with pytest.raises(ToolchainError, match="does not compute what the dense model computes"):
        graph.shrink({heads.name: 64})


def test_multihead_attention_is_refused_by_name_and_the_rest_pruned():
    model, x = TinyMHA().eval(), torch.randn(1, 6, 8)
    graph = PruningGraph(model, x)
    reasons = {f.name: f.reason for f in graph.frozen}
    assert any("nn.MultiheadAttention at 'attn'" in reason for reason in reasons.values())
    result = prune(model, x, ratio=0.5)
    assert result.model.ffn[0].out_features == 32 and result.model.attn.embed_dim == 32
    assert result.manifest["verified_relative_error"] < 1e-4
    assert result.model(torch.randn(1, 6, 8)).shape == (1, 6, 5)


def test_groupnorm_with_several_groups_is_refused_by_name():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 8, 1), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()
    graph = PruningGraph(model, torch.randn(1, 3, 8, 8))
    reasons = {f.name: f.reason for f in graph.frozen}
    assert "GroupNorm at 1 (4 groups)" in reasons["0"]
    assert "3" in graph.widths()


def test_cross_attention_projection_refused_by_name():
    config = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=32,
                                     add_cross_attention=True, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2Model(config).eval()
    _, refused = find_attention_heads(model)
    assert "cross-attention at 'h.0.crossattention'" in refused["h.0.crossattention"]


def test_residual_width_through_rmsnorm_is_verified_not_skipped():
    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                      max_position_embeddings=64)
    model, inputs = transformers.LlamaForCausalLM(config).eval(), _tokens()
    graph = PruningGraph(model, inputs)
    residual = graph.group("model.layers.0.mlp.down_proj")  # reaches the logits only through lm_head's inputs
    graph.shrink({residual.name: 32})
    assert model.model.norm.weight.shape == (32,) and model.model.layers[0].input_layernorm.weight.shape == (32,)
    assert graph.verified_error is not None and graph.verified_error < 1e-4


def test_attention_whose_forward_needs_every_head_is_refused_by_name():
    """timm Swin V2 reshapes the heads' output to the residual width: removing a head cannot run."""
    model = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=64, depths=(1, 1),
                              num_heads=(2, 4), embed_dim=32, window_size=8).eval()
    x = torch.randn(1, 3, 64, 64)
    graph = PruningGraph(model, x)
    reasons = {f.name: f.reason for f in graph.frozen}
    assert "attention at 'layers.1.blocks.0.attn' (WindowAttention) fails" in reasons["layers.1.blocks.0.attn.qkv"]
    assert not [g for g in graph.groups if g.kind == "heads"]
    result = prune(model, x, ratio=0.5)  # the MLPs are still pruned, and verified
    assert result.manifest["params"] < result.manifest["dense_params"]
    assert result.manifest["verified_relative_error"] < 1e-4


def test_a_norm_whose_output_is_a_model_output_protects_its_channels():
    """BERT's last LayerNorm returns last_hidden_state itself: no output node follows it in the trace."""
    model, inputs = _hf_bert()
    graph = PruningGraph(model.eval(), inputs)
    reasons = {f.name: f.reason for f in graph.frozen}
    assert "reach a model output (at encoder.layer.1.output.LayerNorm)" in reasons["encoder.layer.1.output.dense"]


@pytest.mark.parametrize("family", ["hf_bert", "hf_llama_gqa", "hf_gpt2", "timm_swin", "hf_swin"])
def test_pruned_attention_round_trips_through_shapes_and_weights(family, tmp_path):
    """Head counts and per-head tables are plain attributes and shapes, so arch.json rebuilds them."""
    from toolchain.archive import load_pruned, write_arch_and_weights
    from toolchain.inputs import specs_of

    build, _ = FAMILIES[family]
    torch.manual_seed(0)
    dense, inputs = build()
    result = prune(dense.eval(), inputs, ratio=0.5)
    write_arch_and_weights(tmp_path, result.model, dense, family, specs_of(inputs), result.widths)
    torch.manual_seed(1)
    fresh, _ = build()
    loaded, _ = load_pruned(tmp_path, fresh)
    with torch.no_grad():
        for expected, got in zip(flatten_outputs(call_model(result.model, inputs)),
                                 flatten_outputs(call_model(loaded, inputs)), strict=True):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("criterion", ["l2", "taylor", "sensitivity", "redundancy"])
def test_saliency_criteria_score_heads_per_query_channel(criterion):
    from toolchain.graph import widths_for_ratio
    from toolchain.models.vit import VisionTransformer
    from toolchain.saliency import SaliencyConfig, score_groups

    torch.manual_seed(0)
    model, x = VisionTransformer(image_size=32, patch=8, depth=1, num_classes=10).eval(), _image()
    calib = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    graph = PruningGraph(model, x)
    scores = score_groups(model, graph, criterion, calib, SaliencyConfig(batch_size=8, max_batches=1))
    assert scores["blocks.0.attn.qkv"].shape == (192,)
    graph.shrink(widths_for_ratio(graph, 0.5), scores)
    assert model.blocks[0].attn.num_heads == 2 and graph.verified_error < 1e-4


def test_a_prune_runs_each_forward_once(monkeypatch):
    """A forward of a 600 M-parameter model costs seconds at one thread. Torch-Pruning's trace is also the input
    check and gives the output shapes the shrink must keep and the attention calls a head's removal is tried on
    (four forwards before), and the trial runs only the narrowed copy of each attention module (it ran the
    original too)."""
    vit_class = type(_timm_vit()[0])
    attention_class = type(_timm_vit()[0].blocks[0].attn)
    calls = {"model": 0, "attention": 0}

    def counting(cls, key):
        forward = cls.forward

        def counted(self, *args, **kwargs):
            calls[key] += 1
            return forward(self, *args, **kwargs)
        monkeypatch.setattr(cls, "forward", counted)

    counting(vit_class, "model")
    counting(attention_class, "attention")
    model, x = _timm_vit()
    result = prune(model.eval(), x, ratio=0.5)
    assert result.manifest["verified_relative_error"] < 1e-4
    # the trace (which is also the input check) + masked reference + shrink check, and two MAC counts
    assert calls["model"] == 5
    assert calls["attention"] == 5 * len(model.blocks) + len(model.blocks)  # one trial per attention module
