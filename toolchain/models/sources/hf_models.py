"""`hf:DIR` or `hf:ORG/NAME`: a Hugging Face transformers model, always offline.

DIR holds `config.json` (and optionally `model.safetensors`; without it the weights are random). A hub
id is read from the local cache only; nothing is ever downloaded. The class is the config's
`architectures[0]` (the head it was saved with), else `AutoModel`. The example inputs follow what the
model's `forward` takes (see `default_inputs`): token ids + attention mask for text, `pixel_values`
for images, `input_features` for speech.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpec, InputSpecs
from toolchain.models.sources import SourcedModel, SourceOptions, register_source

DEFAULT_SEQUENCE_LENGTH = 128
DEFAULT_IMAGE_SIZE = 224


def _offline() -> None:
    # Read by huggingface_hub at import; set before transformers is first imported, and passed as
    # local_files_only below for the case where it was imported earlier.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _load_config(name: str):
    from transformers import AutoConfig

    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise ToolchainError(f"hf:{name}: {path} has no config.json (write one with model.save_pretrained)")
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        if not path.exists():
            raise ToolchainError(f"hf:{name} is neither a folder nor a model in the local Hugging Face cache "
                                 "(downloads are off: save the model to a folder first)") from exc
        raise ToolchainError(f"hf:{name}: cannot read config.json: {str(exc).splitlines()[0]}") from exc


def _model_class(config):
    import transformers

    for architecture in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, architecture, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def _has_weights(name: str) -> bool:
    path = Path(name)
    if not path.is_dir():
        return True  # a cached hub id: from_pretrained finds its weights (or says it has none)
    return any(path.glob("*.safetensors"))


def _sequence_length(config, *limits: str) -> int:
    limit = next((getattr(config, name) for name in limits if getattr(config, name, None)), None)
    return min(DEFAULT_SEQUENCE_LENGTH, limit) if limit else DEFAULT_SEQUENCE_LENGTH


def default_inputs(config, model) -> InputSpecs | None:
    """Example inputs from what `forward` takes, sized by the config: `pixel_values` at the image size,
    Whisper-style `input_features` (mel bins x frames), token ids + attention mask at length 128 (or the
    model's maximum), and decoder token ids for encoder-decoder models."""
    takes = inspect.signature(model.forward).parameters
    vision = getattr(config, "vision_config", None) or config
    specs = []
    if "pixel_values" in takes:
        size = getattr(vision, "image_size", DEFAULT_IMAGE_SIZE)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        specs.append(InputSpec("pixel_values", "float32", (1, getattr(vision, "num_channels", 3), height, width)))
    if "input_features" in takes and getattr(config, "num_mel_bins", None):
        frames = 2 * getattr(config, "max_source_positions", 1500)  # the encoder's two-stride convolutions
        specs.append(InputSpec("input_features", "float32", (1, config.num_mel_bins, frames)))
    if "input_ids" in takes and not specs and getattr(config, "vocab_size", None):
        length = _sequence_length(config, "max_position_embeddings", "n_positions")
        specs.append(InputSpec("input_ids", "int64", (1, length)))
        if "attention_mask" in takes:
            specs.append(InputSpec("attention_mask", "int64", (1, length)))
    if "decoder_input_ids" in takes and getattr(config, "is_encoder_decoder", False):
        length = _sequence_length(config, "max_target_positions", "max_position_embeddings")
        specs.append(InputSpec("decoder_input_ids", "int64", (1, length)))
    return tuple(specs) or None


@register_source("hf", "hf:DIR", package="transformers")
def hf_model(name: str, options: SourceOptions) -> SourcedModel:
    _offline()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its bars would interleave with the CLI's own steps on stderr
    config = _load_config(name)
    # Exported and traced as plain tensors: no key/value cache objects among the outputs, and the eager
    # attention (the same maths as SDPA, but every op visible to the pruning graph and the exporter).
    config.use_cache = False
    config._attn_implementation = "eager"
    cls = _model_class(config)
    try:
        if _has_weights(name):
            model = cls.from_pretrained(name, config=config, local_files_only=True)
        else:
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    except OSError as exc:
        raise ToolchainError(f"hf:{name}: cannot load the weights offline: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # e.g. a config whose model class transformers does not have (remote code)
        message = str(exc).strip().splitlines()
        raise ToolchainError(f"hf:{name}: cannot build {cls.__name__}: {type(exc).__name__}: "
                             f"{message[0] if message else ''}") from exc
    return SourcedModel(model, default_inputs(config, model))
