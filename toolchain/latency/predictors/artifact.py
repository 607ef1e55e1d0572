"""Predictor artifacts: a folder with `predictor.json` (metadata + small parameters) and, for neural
predictors, `weights.safetensors`. No pickles.

The metadata says what the predictor may be asked: which target/backend/threads and machine fingerprint
it was trained for, which models (and for `lpnet` the group names in order and their dense widths), which
training data (hash), and how it did on held-out configurations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from toolchain.errors import ToolchainError
from toolchain.output_folder import atomic_folder

ARTIFACT_VERSION = 1
META_FILE = "predictor.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class ArtifactMeta:
    predictor: str
    target: str
    backend: str
    threads: int
    fingerprint_id: str
    fingerprint: dict
    models: tuple[str, ...]  # model specs the training data came from
    input_shapes: dict[str, list[int]]  # model spec -> input shape it was measured at
    group_names: tuple[str, ...] = ()  # lpnet: the width-vector order
    dense_widths: tuple[int, ...] = ()  # lpnet: dense width of each group, same order
    training_data_hash: str = ""
    n_train: int = 0  # whole-model configurations trained on
    n_single_ops: int = 0  # single-op measurements trained on (layerwise)
    heldout_metrics: dict = field(default_factory=dict)  # on held-out sampled configurations
    # On held-out configurations the allocators produced (toolchain.latency.allocator_sampling), never trained
    # on; {} when the database held none. What the predictor is used for, so the number to trust.
    allocator_heldout_metrics: dict = field(default_factory=dict)
    n_allocator_train: int = 0  # allocator-produced configurations among the n_train
    created_at: str = ""
    # Which per-configuration latency it was trained on and predicts (median, min). Not a policy default: an
    # artifact written before this field existed was fitted on the median (fit_predictor always sets it).
    statistic: str = "median"
    # Boards of this kind timed on a farm: each board's offset from their mean (toolchain.latency.spread); {}
    # when one machine or board timed everything.
    device_spread: dict = field(default_factory=dict)
    artifact_version: int = ARTIFACT_VERSION

    @property
    def target_label(self) -> str:
        return f"{self.target}/{self.backend}/{self.threads}t"


def training_data_hash(config_keys_and_ms: list[tuple[str, float]]) -> str:
    """sha256 of the sorted (configuration key, measured median) pairs a predictor was trained on."""
    payload = json.dumps(sorted((key, round(ms, 6)) for key, ms in config_keys_and_ms))
    return hashlib.sha256(payload.encode()).hexdigest()


def save_artifact(out_dir: str | Path, meta: ArtifactMeta, params: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Write the artifact into a temporary folder next to `out_dir`, then swap it in: a reader never sees a
    half-written artifact, and a folder the toolchain did not write is never replaced (see output_folder)."""
    out = Path(out_dir)
    with atomic_folder(out, marker=META_FILE) as tmp:
        document = {"meta": asdict(meta), "params": params}
        (tmp / META_FILE).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        if tensors:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS_FILE))
    return out


def read_artifact(path: str | Path) -> tuple[ArtifactMeta, dict, dict[str, torch.Tensor]]:
    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ToolchainError(f"{folder} is not a predictor artifact (no {META_FILE}); make one with `toolchain fit`")
    try:
        document = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ToolchainError(f"predictor artifact {meta_path} is unreadable: {error}") from error
    raw = document.get("meta") if isinstance(document, dict) else None
    if not isinstance(raw, dict):
        raise ToolchainError(f"predictor artifact {meta_path} is unreadable: no 'meta' object; refit it with "
                             "`toolchain fit`")
    if raw.get("artifact_version") != ARTIFACT_VERSION:
        raise ToolchainError(
            f"predictor artifact {folder} has version {raw.get('artifact_version')}, "
            f"this toolchain reads version {ARTIFACT_VERSION}"
        )
    try:
        for name in ("models", "group_names", "dense_widths"):
            raw[name] = tuple(raw[name])
        meta = ArtifactMeta(**raw)
    except (KeyError, TypeError) as error:
        raise ToolchainError(f"predictor artifact {meta_path} has damaged metadata ({type(error).__name__}: "
                             f"{error}); refit it with `toolchain fit`") from error
    params = document.get("params", {})
    if not isinstance(params, dict):
        raise ToolchainError(f"predictor artifact {meta_path} has damaged parameters; refit it with `toolchain fit`")
    return meta, params, _read_weights(folder / WEIGHTS_FILE)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The artifact's tensors ({} when it has none); a truncated or foreign file is one error line."""
    if not path.is_file():
        return {}
    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        raise ToolchainError(f"predictor artifact weights {path} are unreadable ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}); refit it with `toolchain fit`"
                             ) from error
