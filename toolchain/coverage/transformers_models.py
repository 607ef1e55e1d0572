"""Hugging Face transformers models built from configs (random weights, no download).

Small size: 2-layer, narrow configs at short sequences / 32-64 pixel images for the tests. Bench size: the
config classes' defaults (BERT-base, ViT-base, ConvNeXt-T, ResNet-50, Swin-T, MobileViT-S, SegFormer-B0,
Whisper's encoder, GPT-2 small) at sequence 128 or 224 pixels, and a 2-layer Llama with grouped-query
attention. On the command line each is `hf:DIR`, DIR holding the config written by `write_files`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolchain.coverage._registry import BuiltModel, CliSpec, modules_matching, register_builder

SEED = 0
ATTENTION_NAMES = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "c_attn", "qkv")
HEAD_NAMES = ("classifier", "pooler", "decode_head", "lm_head", "head")


def _hand_ignore(model: nn.Module) -> list[nn.Module]:
    """Hand-written Torch-Pruning ignore list: heads and every attention projection kept whole."""
    return modules_matching(model, HEAD_NAMES + ATTENTION_NAMES)


def _token_inputs(vocab_size: int, sequence: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(SEED)
    return {"input_ids": torch.randint(0, vocab_size, (1, sequence), generator=generator),
            "attention_mask": torch.ones(1, sequence, dtype=torch.int64)}


def _float_input(name: str, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    return {name: torch.randn(shape, generator=torch.Generator().manual_seed(SEED))}


def _cli_args(inputs: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """`--input name:dtype:shape` per input, the form the issue gives for named typed inputs."""
    args: list[str] = []
    for name, tensor in inputs.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        args += ["--input", f"{name}:{dtype}:{','.join(map(str, tensor.shape))}"]
    return tuple(args)


def _config_writer(config, architecture: str) -> Callable[[str], None]:
    def write(folder: str) -> None:
        config.architectures = [architecture]
        config.save_pretrained(str(Path(folder)))

    return write


@dataclass(frozen=True)
class HfModel:
    """How to build one entry: the model class name, the config per size, and its example inputs."""

    family: str
    name: str
    model_class: str
    config_class: str
    small_config: dict
    bench_config: dict
    inputs: Callable[[object, str], dict[str, torch.Tensor]]  # (config, size) -> named inputs
    encoder_only: bool = False  # Whisper: the encoder module alone (no `hf:` name for it)


def _tokens(config, size: str) -> dict[str, torch.Tensor]:
    return _token_inputs(config.vocab_size, 16 if size == "small" else 128)


def _pixels(config, size: str) -> dict[str, torch.Tensor]:
    side = getattr(config, "image_size", None) or (64 if size == "small" else 224)
    return _float_input("pixel_values", (1, config.num_channels, side, side))


def _mel_frames(config, size: str) -> dict[str, torch.Tensor]:
    # Whisper's encoder checks the length: 2 frames per position (its second conv has stride 2).
    return _float_input("input_features", (1, config.num_mel_bins, 2 * config.max_source_positions))


MODELS = (
    HfModel("bert", "bert", "BertModel", "BertConfig",
            dict(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                 max_position_embeddings=64), {}, _tokens),
    HfModel("vit", "vit", "ViTForImageClassification", "ViTConfig",
            dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, num_labels=10), {}, _pixels),
    HfModel("convnext", "convnext", "ConvNextForImageClassification", "ConvNextConfig",
            dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10), {}, _pixels),
    HfModel("resnet", "resnet", "ResNetForImageClassification", "ResNetConfig",
            dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
                 num_labels=10), {}, _pixels),
    HfModel("swin", "swin", "SwinForImageClassification", "SwinConfig",
            dict(image_size=64, patch_size=4, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4,
                 num_labels=10), {}, _pixels),
    HfModel("mobilevit", "mobilevit", "MobileViTForImageClassification", "MobileViTConfig",
            dict(image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 48, 64, 128],
                 num_attention_heads=2, num_labels=10), {}, _pixels),
    HfModel("segformer", "segformer", "SegformerForSemanticSegmentation", "SegformerConfig",
            dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 2, 4, 8],
                 decoder_hidden_size=64, num_labels=10), {}, _pixels),
    HfModel("whisper", "whisper_encoder", "WhisperModel", "WhisperConfig",
            dict(d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=64,
                 vocab_size=1000, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
            {}, _mel_frames, encoder_only=True),
    HfModel("gpt2", "gpt2", "GPT2Model", "GPT2Config",
            dict(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4, use_cache=False, bos_token_id=0,
                 eos_token_id=0),
            dict(use_cache=False), _tokens),
    HfModel("llama", "llama_gqa", "LlamaModel", "LlamaConfig",
            dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=64, use_cache=False),
            dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256, use_cache=False),
            _tokens),
)


def _build(spec: HfModel, size: str) -> BuiltModel:
    import transformers

    torch.manual_seed(SEED)  # transformers initialises weights from the global generator
    config = getattr(transformers, spec.config_class)(**(spec.small_config if size == "small" else spec.bench_config))
    model = getattr(transformers, spec.model_class)(config)
    if spec.encoder_only:
        model = model.get_encoder()
    inputs = spec.inputs(config, size)
    cli = None
    if not spec.encoder_only:
        cli = CliSpec("hf:{workdir}/" + spec.name, _cli_args(inputs), _config_writer(config, spec.model_class))
    return BuiltModel(model, inputs, cli)


def _register_all() -> None:
    for spec in MODELS:
        register_builder("transformers", spec.family, spec.name, representative=True,
                         hand_ignore=_hand_ignore)(functools.partial(_build, spec))


_register_all()
