"""Every torchvision classification and segmentation model, registered from torchvision's own listing.

Small size: 10 classes and 64x64 inputs (Inception, which needs at least 75x75, at 96x96), and for the
families whose smallest model is large a narrow config of the same classes (`SMALL_CONFIGS`); one
representative per family runs in the tests. Bench size: the library's
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
SMALL_SIDE = {"inception_v3": 96}
BENCH_SIDE = {"inception_v3": 299}
SMALL_DEFAULT_SIDE = 64
BENCH_DEFAULT_SIDE = 224


def _small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                             num_classes=10)


def _small_swin(v2: bool):
    from torchvision.models import swin_transformer as swin

    extra = dict(block=swin.SwinTransformerBlockV2, downsample_layer=swin.PatchMergingV2) if v2 else {}
    return swin.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                                stochastic_depth_prob=0.0, num_classes=10, **extra)


def _small_maxvit():
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(64, 64), stem_channels=16, partition_size=2, block_channels=[16, 32],
                  block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10)


def _small_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)], num_classes=10)


def _small_vgg():
    from torchvision.models.vgg import VGG, make_layers

    model = VGG(make_layers([16, "M", 32, "M", 64, "M", 512, "M"]), num_classes=10)
    # Same three-Linear classifier, 256 wide instead of 4096 (that one alone holds 119 M parameters).
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 256), nn.ReLU(True), nn.Dropout(), nn.Linear(256, 256),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(256, 10))
    return model


def _small_resnet(width_per_group: int, groups: int):
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10, groups=groups, width_per_group=width_per_group)


def _small_densenet():
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=10)


# Narrow/shallow configs of the same architecture classes for the families whose smallest model is large
# (the tests must stay fast on 2 cores); the others use the library's model with 10 classes.
SMALL_CONFIGS = {
    "vit_b_32": _small_vit, "swin_t": lambda: _small_swin(v2=False), "swin_v2_t": lambda: _small_swin(v2=True),
    "maxvit_t": _small_maxvit, "convnext_tiny": _small_convnext, "vgg11": _small_vgg,
    "resnext50_32x4d": lambda: _small_resnet(width_per_group=4, groups=8),
    "wide_resnet50_2": lambda: _small_resnet(width_per_group=128, groups=1), "densenet121": _small_densenet,
}


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
    model = SMALL_CONFIGS[name]() if small and name in SMALL_CONFIGS else torchvision.models.get_model(name, **kwargs)
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
