"""`ultralytics:yolov8n.yaml`: an Ultralytics YOLO network built from its config (random weights).

The module returned is the underlying `nn.Module` (`YOLO(cfg).model`) with its heads in export mode
(one dense tensor out, as in Ultralytics' own ONNX export). `.pt` checkpoints are pickles that run
code when loaded; they are refused unless the user passes `--trust-pickle`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.inputs import InputSpec
from toolchain.models.sources import SourcedModel, SourceOptions, register_source

DEFAULT_IMAGE_SIZE = 640


@register_source("ultralytics", "ultralytics:yolov8n.yaml", package="ultralytics")
def ultralytics_model(name: str, options: SourceOptions) -> SourcedModel:
    suffix = Path(name).suffix
    if suffix == ".pt" and not options.trust_pickle:
        raise ToolchainError(f"ultralytics:{name} is a pickle checkpoint, and loading it runs code it contains; "
                             "pass --trust-pickle if you trust its author, or give a .yaml config")
    if suffix not in {".yaml", ".yml", ".pt"}:
        raise ToolchainError(f"ultralytics:{name}: expected a model config like yolov8n.yaml (or a .pt checkpoint)")
    if suffix == ".pt" and not Path(name).is_file():  # Ultralytics would try to download a missing one
        raise ToolchainError(f"ultralytics:{name}: checkpoint file not found (nothing is downloaded)")
    # Ultralytics prints banners on stdout (a first-run settings notice); keep stdout for `--json`.
    with contextlib.redirect_stdout(sys.stderr):
        model = _build(name)
    model = model.float().eval()
    for module in model.modules():
        if hasattr(module, "export") and hasattr(module, "format"):  # Detect/Segment/Pose heads
            module.export, module.format = True, "onnx"
    return SourcedModel(model, (InputSpec.float_input((1, 3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)),))


def _build(name: str):
    from ultralytics import YOLO

    try:
        return YOLO(name, verbose=False).model
    except FileNotFoundError as exc:
        raise ToolchainError(f"ultralytics:{name}: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # Ultralytics raises many types for a bad config name
        raise ToolchainError(f"ultralytics:{name} could not be built: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
