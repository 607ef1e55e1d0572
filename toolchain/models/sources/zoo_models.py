"""`zoo:NAME`: the toolchain's own model zoo."""

from __future__ import annotations

from pathlib import Path

from toolchain.inputs import InputSpec, specs_of
from toolchain.models._registry import create_model, get_model_spec
from toolchain.models.sources import SourcedModel, SourceOptions, register_source

DEMO_WEIGHTS = Path(__file__).parents[1] / "weights" / "demo.safetensors"


@register_source("zoo", "zoo:NAME")
def zoo_model(name: str, options: SourceOptions) -> SourcedModel:
    spec = get_model_spec(name)
    # Entries with their own example inputs (zoo:minilm: token ids + mask) describe them; others take one image.
    specs = specs_of(spec.example_inputs()) if spec.example_inputs else (InputSpec.float_input(spec.input_shape),)
    weights = DEMO_WEIGHTS if name == "demo" and DEMO_WEIGHTS.is_file() else None
    return SourcedModel(create_model(name), specs, weights)
