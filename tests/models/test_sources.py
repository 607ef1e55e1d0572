"""Model sources: every prefix resolves a small model with sensible example inputs; failures are one line."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpec, call_model, make_inputs, output_shapes, vocab_size_of
from toolchain.models import resolve_model
from toolchain.models.sources import list_sources


def needs(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"{package} is not installed")


@pytest.fixture
def yolo_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))


def hf_folder(tmp_path, kind: str) -> str:
    """A tiny transformers model saved to a folder (random weights, built from a config)."""
    import transformers

    folder = tmp_path / kind
    if kind == "bert":
        config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, vocab_size=50, max_position_embeddings=256,
                                         num_labels=3)
        transformers.BertForSequenceClassification(config).save_pretrained(folder)
    else:
        config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, image_size=16, patch_size=8, num_labels=5)
        transformers.ViTForImageClassification(config).save_pretrained(folder)
    return str(folder)


def test_every_library_has_a_source():
    assert {"zoo", "torchvision", "timm", "hf", "ultralytics"} <= set(list_sources())


@needs("torchvision")
def test_torchvision_source():
    model, inputs = resolve_model("torchvision:resnet18")
    assert inputs == (InputSpec.float_input((1, 3, 224, 224)),)
    _, small = resolve_model("torchvision:resnet18", input_shape=(1, 3, 32, 32))
    assert output_shapes(call_model(model, make_inputs(small))) == [(1, 1000)]
    with pytest.raises(ToolchainError, match="torchvision has no model 'resnet_nope'"):
        resolve_model("torchvision:resnet_nope")


@needs("timm")
def test_timm_source_uses_the_model_default_input_size():
    model, inputs = resolve_model("timm:test_resnet")
    assert inputs[0].dtype == "float32" and inputs[0].shape[:2] == (1, 3)
    assert len(output_shapes(call_model(model, make_inputs(inputs)))) == 1
    with pytest.raises(ToolchainError, match="timm has no model"):
        resolve_model("timm:not_a_model")


@needs("transformers")
def test_hf_text_folder_gives_token_ids_and_mask(tmp_path):
    model, inputs = resolve_model(f"hf:{hf_folder(tmp_path, 'bert')}")
    assert inputs == (InputSpec("input_ids", "int64", (1, 128)), InputSpec("attention_mask", "int64", (1, 128)))
    assert vocab_size_of(model) == 50
    assert output_shapes(call_model(model, make_inputs(inputs, vocab_size_of(model)))) == [(1, 3)]


@needs("transformers")
def test_hf_vision_folder_gives_pixel_values_and_loads_saved_weights(tmp_path):
    folder = hf_folder(tmp_path, "vit")
    first, inputs = resolve_model(f"hf:{folder}")
    second, _ = resolve_model(f"hf:{folder}")
    assert inputs == (InputSpec("pixel_values", "float32", (1, 3, 16, 16)),)
    assert torch.equal(first.classifier.weight, second.classifier.weight)  # model.safetensors was read


@needs("transformers")
def test_hf_speech_and_encoder_decoder_inputs_follow_forward(tmp_path):
    import transformers

    config = transformers.WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                        num_mel_bins=16, max_source_positions=20, max_target_positions=16,
                                        vocab_size=60, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                        decoder_start_token_id=0)
    transformers.WhisperModel(config).save_pretrained(tmp_path / "whisper")
    model, inputs = resolve_model(f"hf:{tmp_path / 'whisper'}")
    assert inputs == (InputSpec("input_features", "float32", (1, 16, 40)),
                      InputSpec("decoder_input_ids", "int64", (1, 16)))
    assert output_shapes(call_model(model, make_inputs(inputs, vocab_size_of(model))))[0] == (1, 16, 32)


@needs("transformers")
def test_hf_missing_folder_and_uncached_id_are_clear_errors(tmp_path):
    with pytest.raises(ToolchainError, match="neither a folder nor a model in the local Hugging Face cache"):
        resolve_model(f"hf:{tmp_path / 'absent'}")
    with pytest.raises(ToolchainError, match="neither a folder nor a model in the local Hugging Face cache"):
        resolve_model("hf:nobody-here/no-such-model")
    with pytest.raises(ToolchainError, match="has no config.json"):
        resolve_model(f"hf:{tmp_path}")


@needs("ultralytics")
@pytest.mark.slow
def test_ultralytics_yaml_builds_the_module_in_export_mode(yolo_config_dir, capsys):
    model, inputs = resolve_model("ultralytics:yolov8n.yaml", input_shape=(1, 3, 64, 64))
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert output_shapes(call_model(model, make_inputs(inputs))) == [(1, 84, 84)]  # one dense tensor
    assert capsys.readouterr().out == ""  # banners go to stderr: --json output stays clean


@needs("ultralytics")
@pytest.mark.slow
def test_ultralytics_checkpoint_loads_with_the_opt_in(yolo_config_dir, tmp_path):
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(tmp_path / "yolo.pt")
    model, _ = resolve_model(f"ultralytics:{tmp_path / 'yolo.pt'}", input_shape=(1, 3, 64, 64), trust_pickle=True)
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


@needs("ultralytics")
def test_ultralytics_pickle_checkpoint_needs_the_opt_in(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not read")
    with pytest.raises(ToolchainError, match="pickle checkpoint.*--trust-pickle"):
        resolve_model(f"ultralytics:{checkpoint}")
    with pytest.raises(ToolchainError, match="not found"):
        resolve_model(f"ultralytics:{tmp_path / 'absent.pt'}", trust_pickle=True)


def test_missing_library_names_the_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else
                        real_find_spec(name, *a))
    with pytest.raises(ToolchainError, match="need the 'timm' package, which is not installed"):
        resolve_model("timm:resnet18")


def test_unknown_prefix_is_a_factory_spec_error():
    with pytest.raises(ToolchainError, match="malformed model spec"):
        resolve_model("tensorflow:resnet")
