"""Ultralytics YOLOv8n and YOLO11n from their YAML configs (random weights; never a `.pt` pickle).

Small size: 64x64 images; bench size: 640x640. On the command line: `ultralytics:yolov8n.yaml`.
"""

from __future__ import annotations

import functools
import os
import tempfile

import torch
from torch import nn

from toolchain.coverage._registry import BuiltModel, CliSpec, register_builder

CONFIGS = {"yolov8n": "yolov8", "yolo11n": "yolo11"}  # entry name -> family


def _detect_head(model: nn.Module) -> list[nn.Module]:
    """Hand-written Torch-Pruning ignore list (as in its YOLOv8 example): the Detect head."""
    return [model.model[-1]]


def _build(name: str, size: str) -> BuiltModel:
    # Ultralytics writes a settings file on import; keep it out of the user's home.
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="toolchain-yolo-"))
    from toolchain.models import resolve_model

    torch.manual_seed(0)
    # The same network the CLI's `ultralytics:` source builds (heads in export mode: one dense output), so
    # a pruned folder reloaded from the CLI is compared with the model it came from.
    model, _ = resolve_model(f"ultralytics:{name}.yaml")
    side = 64 if size == "small" else 640
    example = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    cli = CliSpec(f"ultralytics:{name}.yaml", ("--input-shape", f"1,3,{side},{side}"))
    return BuiltModel(model, example, cli)


def _register_all() -> None:
    for name, family in CONFIGS.items():
        register_builder("ultralytics", family, name, representative=True,
                         hand_ignore=_detect_head)(functools.partial(_build, name))


_register_all()
