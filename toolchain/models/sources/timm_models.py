"""`timm:NAME`: any timm model, pretrained=False, at its default input size."""

from __future__ import annotations

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpec
from toolchain.models.sources import SourcedModel, SourceOptions, register_source


@register_source("timm", "timm:resnet18", package="timm")
def timm_model(name: str, options: SourceOptions) -> SourcedModel:
    import timm

    if not timm.is_model(name):
        raise ToolchainError(f"timm has no model {name!r} (see timm.list_models())")
    model = timm.create_model(name, pretrained=False)
    channels, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return SourcedModel(model, (InputSpec.float_input((1, channels, height, width)),))
