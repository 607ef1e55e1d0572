"""Typed named inputs: parsing, example tensors inside the vocabulary, keys, output names."""

from __future__ import annotations

import pytest
import torch

from toolchain.inputs import (
    InputSpec,
    make_inputs,
    output_names,
    random_like,
    specs_from_key,
    specs_key,
    specs_of,
)


def test_parse_good_specs():
    assert InputSpec.parse("input_ids:int64:1,128") == InputSpec("input_ids", "int64", (1, 128))
    assert InputSpec.parse("pixel_values:float32:1x3x32x32").shape == (1, 3, 32, 32)
    assert InputSpec.parse("flags:bool:2").torch_dtype == torch.bool


@pytest.mark.parametrize("text, words", [
    ("input_ids:int64", "NAME:DTYPE:SHAPE"),
    ("input_ids:long:1,128", "dtype 'long'"),
    ("input_ids:int64:1,a", "shape '1,a'"),
    ("input_ids:int64:1,0", "positive"),
    ("input_ids:int64:", "shape ''"),
    ("1x:int64:1,8", "identifier"),
    ("a:int64:1:2", "NAME:DTYPE:SHAPE"),
])
def test_parse_bad_specs_name_the_problem(text, words):
    with pytest.raises(ValueError, match=words):
        InputSpec.parse(text)


def test_token_ids_inside_the_vocabulary_and_masks_all_ones():
    specs = (InputSpec("input_ids", "int64", (4, 64)), InputSpec("attention_mask", "int64", (4, 64)),
             InputSpec("token_type_ids", "int64", (4, 64)))
    inputs = make_inputs(specs, vocab_size=7)
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert inputs["input_ids"].dtype == torch.int64 and int(inputs["input_ids"].max()) <= 6
    assert len(inputs["input_ids"].unique()) == 7  # the whole vocabulary is drawn from, not a constant
    assert bool((inputs["attention_mask"] == 1).all()) and bool((inputs["token_type_ids"] == 0).all())
    fresh = random_like(inputs, torch.Generator().manual_seed(1))
    assert int(fresh["input_ids"].max()) <= 6 and not torch.equal(fresh["input_ids"], inputs["input_ids"])
    assert bool((fresh["attention_mask"] == 1).all())


def test_one_float_input_is_a_positional_tensor_and_keys_round_trip():
    specs = (InputSpec.float_input((1, 3, 8, 8)),)
    x = make_inputs(specs)
    assert isinstance(x, torch.Tensor) and x.shape == (1, 3, 8, 8)
    assert specs_key(specs) == (1, 3, 8, 8) and specs_from_key((1, 3, 8, 8)) == specs
    named = (InputSpec("input_ids", "int64", (1, 8)),)
    assert specs_from_key(specs_key(named)) == named
    assert specs_of(make_inputs(named, vocab_size=5)) == named


def test_output_names_follow_flatten_order():
    output = {"logits": torch.zeros(1), "hidden": (torch.zeros(1), None, torch.zeros(1))}
    assert output_names(output) == ["logits", "hidden.0", "hidden.2"]
    assert output_names(torch.zeros(1)) == ["output"]
    assert output_names((torch.zeros(1), [torch.zeros(1)])) == ["output.0", "output.1.0"]
