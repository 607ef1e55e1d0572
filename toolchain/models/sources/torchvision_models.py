"""`torchvision:NAME`: any model of `torchvision.models.list_models()`, with random weights."""

from __future__ import annotations

import inspect

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpec
from toolchain.models.sources import SourcedModel, SourceOptions, register_source

# Models whose stem needs a larger image than the usual 224 (inception's 299 is what it was built for).
_IMAGE_SIZE = {"inception_v3": 299}
# Video models take (batch, channels, frames, height, width).
_VIDEO_SHAPE = (1, 3, 8, 112, 112)


@register_source("torchvision", "torchvision:resnet18", package="torchvision")
def torchvision_model(name: str, options: SourceOptions) -> SourcedModel:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ToolchainError(f"torchvision has no model {name!r} (see torchvision.models.list_models())")
    builder = torchvision.models.get_model_builder(name)
    # Segmentation and detection builders would otherwise download an ImageNet backbone.
    offline = {"weights_backbone": None} if "weights_backbone" in inspect.signature(builder).parameters else {}
    model = builder(weights=None, **offline)
    if name in torchvision.models.list_models(module=torchvision.models.video):
        shape = _VIDEO_SHAPE
    else:
        size = _IMAGE_SIZE.get(name, 224)
        shape = (1, 3, size, size)
    return SourcedModel(model, (InputSpec.float_input(shape),))
