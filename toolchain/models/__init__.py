"""Model zoo and model resolution.

One door for each concept: `create_model(name)` builds a zoo model, `resolve_model(spec)` turns
what a user typed (`zoo:NAME`, `timm:NAME`, `hf:DIR`, ... or `path/to/file.py:factory`) into a
module and its example inputs.

>>> model, inputs = resolve_model("zoo:demo")
>>> inputs[0].shape
(1, 1, 28, 28)
"""

from toolchain.models import densenet, minilm, mobilenet, resnet, unet, vgg, vit  # noqa: F401  (fill the registry)
from toolchain.models._registry import (
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
    model_example_inputs,
    register_model,
)
from toolchain.models.loading import DEMO_WEIGHTS, load_factory, load_weights, resolve_model

__all__ = [
    "DEMO_WEIGHTS",
    "ModelSpec",
    "create_model",
    "get_model_spec",
    "list_models",
    "load_factory",
    "load_weights",
    "model_example_inputs",
    "register_model",
    "resolve_model",
]
