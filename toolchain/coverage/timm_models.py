"""One timm model per family (32 families), each at a small config for the tests and the library's
default config for the benchmark (`timm:NAME` on the command line, at the model's own input size)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from toolchain.coverage._registry import BuiltModel, CliSpec, modules_matching, register_builder


@dataclass(frozen=True)
class TimmFamily:
    family: str
    bench_name: str  # the model the issue names where it names one
    small_name: str
    small_side: int = 64
    small_kwargs: dict = field(default_factory=dict)
    attention: bool = False


FAMILIES = (
    TimmFamily("resnet", "resnet50", "resnet18"),
    TimmFamily("efficientnet", "efficientnet_b0", "efficientnet_b0"),
    TimmFamily("mobilenetv3", "mobilenetv3_large_100", "mobilenetv3_small_050"),
    TimmFamily("convnext", "convnext_tiny", "convnext_atto"),
    TimmFamily("convnextv2", "convnextv2_nano", "convnextv2_atto"),
    TimmFamily("regnety", "regnety_008", "regnety_002"),
    TimmFamily("ghostnet", "ghostnet_100", "ghostnet_050"),
    TimmFamily("rexnet", "rexnet_100", "rexnet_100"),
    TimmFamily("vit", "vit_small_patch16_224", "vit_tiny_patch16_224", small_kwargs={"img_size": 64, "depth": 2},
               attention=True),
    TimmFamily("deit", "deit_tiny_patch16_224", "deit_tiny_patch16_224", small_kwargs={"img_size": 64, "depth": 2},
               attention=True),
    TimmFamily("swin", "swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224",
               small_kwargs={"img_size": 64, "window_size": 2, "embed_dim": 32, "num_heads": (1, 2, 4, 8)},
               attention=True),
    TimmFamily("cspdarknet", "cspdarknet53", "cspdarknet53"),
    TimmFamily("levit", "levit_128s", "levit_128s", small_kwargs={"img_size": 64}, attention=True),
    TimmFamily("efficientformer", "efficientformer_l1", "efficientformer_l1", small_side=224, attention=True),
    TimmFamily("fastvit", "fastvit_t8", "fastvit_t8"),
    TimmFamily("densenet", "densenet121", "densenet121"),
    TimmFamily("mixnet", "mixnet_s", "mixnet_s"),
    TimmFamily("mobilevit", "mobilevit_xxs", "mobilevit_xxs", attention=True),
    TimmFamily("poolformer", "poolformer_s12", "poolformer_s12"),
    TimmFamily("coatnet", "coatnet_0_rw_224", "coatnet_nano_cc_224", small_kwargs={"img_size": 64}, attention=True),
    TimmFamily("maxvit", "maxvit_tiny_tf_224", "maxvit_pico_rw_256", small_kwargs={"img_size": 64}, attention=True),
    TimmFamily("dla", "dla34", "dla46_c"),
    TimmFamily("hrnet", "hrnet_w18_small", "hrnet_w18_small"),
    TimmFamily("resnest", "resnest14d", "resnest14d"),
    TimmFamily("res2net", "res2net50_14w_8s", "res2net50_14w_8s"),
    TimmFamily("vgg", "vgg11", "vgg11", small_kwargs={"mlp_ratio": 0.0625}),  # a 256-wide MLP, not 4096
    TimmFamily("xception", "xception41", "xception41"),
    TimmFamily("nfnet", "dm_nfnet_f0", "nf_resnet26"),
    TimmFamily("edgenext", "edgenext_xx_small", "edgenext_xx_small", attention=True),
    TimmFamily("tinyvit", "tiny_vit_5m_224", "tiny_vit_5m_224", small_side=224, attention=True),
    TimmFamily("repvit", "repvit_m0_9", "repvit_m0_9"),
    TimmFamily("pvt_v2", "pvt_v2_b0", "pvt_v2_b0", attention=True),
)

HEAD_NAMES = ("head", "fc", "classifier", "last_linear")
ATTENTION_NAMES = ("qkv", "q", "k", "v", "kv", "proj", "qkv_proj", "out_proj", "attn", "attention")


def _head(model: nn.Module) -> list[nn.Module]:
    """Hand-written ignore list for convolutional families: the classifier head."""
    return modules_matching(model, HEAD_NAMES)


def _head_and_attention(model: nn.Module) -> list[nn.Module]:
    """Hand-written ignore list for attention families: the head and every attention block kept whole."""
    return modules_matching(model, HEAD_NAMES + ATTENTION_NAMES)


def _build(spec: TimmFamily, size: str) -> BuiltModel:
    import timm

    generator = torch.Generator().manual_seed(0)
    if size == "small":
        model = timm.create_model(spec.small_name, pretrained=False, num_classes=10, **spec.small_kwargs)
        return BuiltModel(model, torch.randn(1, 3, spec.small_side, spec.small_side, generator=generator), None)
    model = timm.create_model(spec.bench_name, pretrained=False)
    channels, height, width = model.pretrained_cfg["input_size"]
    shape = (1, channels, height, width)
    return BuiltModel(model, torch.randn(shape, generator=generator),
                      CliSpec(f"timm:{spec.bench_name}", ("--input-shape", ",".join(map(str, shape)))))


def _register_all() -> None:
    for spec in FAMILIES:
        register_builder("timm", spec.family, spec.bench_name, representative=True,
                         hand_ignore=_head_and_attention if spec.attention else _head,
                         )(functools.partial(_build, spec))


_register_all()
