"""`hf:DIR` or `hf:ORG/NAME`: a Hugging Face transformers model, always offline.

DIR holds `config.json` (and optionally `model.safetensors`; without it the weights are random). A hub
id is read from the local cache only; nothing is ever downloaded. The class is the config's
`architectures[0]` (the head it was saved with), else `AutoModel`. The example inputs follow the
config's modality: token ids + attention mask for text, `pixel_values` for images.
"""

from __future__ import annotations

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


def default_inputs(config) -> InputSpecs | None:
    """Token ids + mask for text models, pixel_values for vision ones (the config's own sizes)."""
    vision = getattr(config, "vision_config", None) or config
    if hasattr(vision, "num_channels") or hasattr(vision, "image_size"):
        size = getattr(vision, "image_size", DEFAULT_IMAGE_SIZE)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (InputSpec("pixel_values", "float32", (1, getattr(vision, "num_channels", 3), height, width)),)
    if getattr(config, "vocab_size", None):
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        length = min(DEFAULT_SEQUENCE_LENGTH, limit) if limit else DEFAULT_SEQUENCE_LENGTH
        return (InputSpec("input_ids", "int64", (1, length)), InputSpec("attention_mask", "int64", (1, length)))
    return None


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
    return SourcedModel(model, default_inputs(config))
