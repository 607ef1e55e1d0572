"""Every torchvision classification and segmentation model, registered from torchvision's own listing.

Small size: 10 classes and 64x64 inputs (ViT at 64x64 with its 16-pixel patches; Inception, which needs
at least 75x75, at 96x96); one representative per family runs in the tests. Bench size: the library's
defaults at 224x224 (Inception 299x299), named on the command line as `torchvision:NAME`.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from toolchain.coverage._registry import BuiltModel, CliSpec, modules_matching, register_builder

# Family of a model name: the first prefix that matches (longer prefixes first where they overlap).
FAMILY_PREFIXES = (
    "alexnet", "convnext", "densenet", "efficientnet_v2", "efficientnet", "googlenet", "inception", "maxvit",
    "mnasnet", "mobilenet_v2", "mobilenet_v3", "regnet_x", "regnet_y", "resnext", "resnet", "shufflenet_v2",
    "squeezenet", "swin_v2", "swin", "vgg", "vit", "wide_resnet", "deeplabv3", "fcn", "lraspp",
)

# The smallest model of each family: the one the generated tests build.
REPRESENTATIVES = {
    "alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet", "inception_v3",
    "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf",
    "resnext50_32x4d", "resnet18", "shufflenet_v2_x0_5", "squeezenet1_0", "swin_v2_t", "swin_t", "vgg11",
    "vit_b_32", "wide_resnet50_2", "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "lraspp_mobilenet_v3_large",
}

# Input side per size; models absent here use the default.
SMALL_SIDE = {"inception_v3": 96, "maxvit_t": 224}
BENCH_SIDE = {"inception_v3": 299}
SMALL_DEFAULT_SIDE = 64
BENCH_DEFAULT_SIDE = 224


def family_of(name: str) -> str:
    return next(prefix for prefix in FAMILY_PREFIXES if name.startswith(prefix))


def _attention_projections(model: nn.Module) -> list[nn.Module]:
    """Hand-written ignore list for attention families: keep every attention projection whole, so
    Torch-Pruning cannot split heads (the usual advice when it has no `num_heads` for a model)."""
    return modules_matching(model, ("qkv", "proj", "out_proj", "heads", "head"), (nn.MultiheadAttention,))


def _classifier_and_aux(model: nn.Module) -> list[nn.Module]:
    """Hand-written ignore list for the other families: the classifier (and segmentation heads' last conv)."""
    found = modules_matching(model, ("fc", "classifier", "head", "heads", "low_classifier", "high_classifier"))
    return found or [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]


def _build(name: str, segmentation: bool, size: str) -> BuiltModel:
    import torchvision

    small = size == "small"
    side = (SMALL_SIDE if small else BENCH_SIDE).get(name, SMALL_DEFAULT_SIDE if small else BENCH_DEFAULT_SIDE)
    kwargs: dict = {"weights": None}
    if segmentation:
        kwargs.update(weights_backbone=None, aux_loss=False)
    if small:
        kwargs["num_classes"] = 10
        if family_of(name) == "vit":
            kwargs["image_size"] = side
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)  # aux heads only run in training
    model = torchvision.models.get_model(name, **kwargs)
    example = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    cli = None if small else CliSpec(f"torchvision:{name}", ("--input-shape", f"1,3,{side},{side}"))
    return BuiltModel(model, example, cli)


def _register_all() -> None:
    try:
        import torchvision
    except ImportError:  # the registry lists only what is installed
        return
    listings = [(n, False) for n in torchvision.models.list_models(module=torchvision.models)]
    listings += [(n, True) for n in torchvision.models.list_models(module=torchvision.models.segmentation)]
    for name, segmentation in listings:
        family = family_of(name)
        attention = family in ("vit", "swin", "swin_v2", "maxvit")
        register_builder("torchvision", family, name, representative=name in REPRESENTATIVES,
                         hand_ignore=_attention_projections if attention else _classifier_and_aux,
                         )(functools.partial(_build, name, segmentation))


_register_all()
