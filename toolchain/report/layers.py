"""The chosen pruned model: kept widths per channel group, and where latency goes per layer before and after.

Per-layer latency comes from the measurement database only: the layers of the dense configuration and of the
configuration with the bundle's widths (as measured whole), each looked up among the single-op measurements
(the same layer shape timed alone). A layer without its own measurement, or a configuration not in the
database, is shown as missing.

Example:
    >>> section = pruned_model_section(inputs, labels, chosen="dist/cpu/demo")
    >>> section.title
    'Pruned model: dist/cpu/demo/manifest.json'
"""

from __future__ import annotations

from toolchain.report import plots
from toolchain.report.database import layer_key
from toolchain.report.document import MISSING, Figure, Missing, Paragraph, Section, Table, cell
from toolchain.report.provenance import FingerprintLabels
from toolchain.report.readers import RunInputs
from toolchain.report.records import Database, ManifestRecord, ModelConfig

_COMPUTE_OPS = ("conv", "dwconv", "linear", "conv_transpose")


def choose_manifest(inputs: RunInputs, chosen: str | None) -> tuple[ManifestRecord | None, str]:
    """The manifest to show and why it was chosen: the one whose path contains `chosen`, else the first (by
    path) whose model has a dense configuration in a database, else the first with widths."""
    candidates = sorted((m for m in inputs.manifests if m.widths), key=lambda m: m.source)
    if chosen:
        picked = [m for m in candidates if chosen in m.source]
        return (picked[0], f"chosen with --bundle {chosen}") if picked else (None, f"no manifest with widths "
                                                                                     f"matches --bundle {chosen}")
    for manifest in candidates:
        if any(_find(db, manifest.model, manifest.widths[1]) for db in inputs.databases):
            return manifest, "the first bundle whose dense model is in a measurement database"
    if candidates:
        return candidates[0], "the first bundle (by path) with per-group widths"
    return None, "no manifest with per-group widths"


def _find(db: Database, model: str | None, widths: dict) -> ModelConfig | None:
    return next((c for c in db.configs if c.model == model and c.widths == widths), None)


def _describe(spec: dict) -> str:
    kernel = f" {spec.get('kernel')}x{spec.get('kernel')}" if spec.get("op") != "linear" else ""
    return f"{spec.get('op')}{kernel} {spec.get('in_channels')}->{spec.get('out_channels')} @{spec.get('in_h')}"


def pruned_model_section(inputs: RunInputs, labels: FingerprintLabels, chosen: str | None = None) -> Section:
    manifest, why = choose_manifest(inputs, chosen)
    if manifest is None:
        return Section("pruned", "Pruned model", (Missing("per-layer kept widths", why),
                                                  Missing("per-layer latency", why)))
    kept, dense = manifest.widths
    groups = list(dense)
    blocks: list = [Paragraph(f"{manifest.source} ({manifest.model}, target {manifest.target or MISSING}), "
                              f"{why}. Source: {labels.source(manifest.source, manifest.fingerprint_id)}.")]
    frozen = manifest.manifest.pruning.frozen_groups or []
    if isinstance(frozen, dict):
        frozen = [f"{name} ({why})" for name, why in frozen.items()]
    blocks.append(Figure("kept-widths.png", plots.kept_widths(
        groups, [int(kept.get(g, dense[g])) for g in groups], [int(dense[g]) for g in groups],
        f"Kept channels per group, {manifest.model}"), "kept width against dense width per channel group",
        "Channels kept per prunable group (dark) out of the dense width (light)."
        + (f" Frozen (never pruned): {', '.join(map(str, frozen))}." if frozen else "")))
    blocks += _layer_blocks(inputs, labels, manifest)
    return Section("pruned", f"Pruned model: {manifest.source}", tuple(blocks))


def _layer_blocks(inputs: RunInputs, labels: FingerprintLabels, manifest: ManifestRecord) -> list:
    kept, dense = manifest.widths
    model = manifest.model
    for db in inputs.databases:
        before = _find(db, model, dense)
        if before is not None:
            break
    else:
        return [Missing("per-layer latency", f"no measurement database holds the dense configuration of {model}; "
                                             "run `toolchain profile` for it")]
    after = _find(db, model, kept)
    compute = [(i, spec) for i, spec in enumerate(before.layers) if spec.get("op") in _COMPUTE_OPS]
    after_layers = after.layers if after is not None else ()
    names, before_ms, after_ms, rows = [], [], [], []
    for index, spec in compute:
        pruned_spec = after_layers[index] if index < len(after_layers) else None
        ms_before = db.single_op_ms.get(layer_key(spec))
        ms_after = db.single_op_ms.get(layer_key(pruned_spec)) if pruned_spec else None
        names.append(f"#{index} {_describe(spec)}")
        before_ms.append(ms_before)
        after_ms.append(ms_after)
        rows.append((f"#{index}", _describe(spec), cell(ms_before, "{:.4f} ms"),
                     _describe(pruned_spec) if pruned_spec else MISSING, cell(ms_after, "{:.4f} ms")))
    blocks: list = []
    if after is None:
        blocks.append(Missing("per-layer latency after pruning", f"{db.source} has no measured configuration with "
                                                                 "this bundle's widths"))
    if not any(v is not None for v in before_ms + after_ms):
        blocks.append(Missing("per-layer latency", f"{db.source} has no single-op measurement of any layer of "
                                                   f"{model} (profile with --layer-levels)"))
        return blocks
    source = labels.source_many(db.source, db.fingerprint_ids)
    blocks.append(Figure("layer-latency.png", plots.layer_latency(
        names, before_ms, after_ms, f"Latency per compute layer, {model}"),
        "latency of each compute layer before and after pruning",
        f"Each compute layer's shape timed alone (single-op measurements from {source}). Whole model measured: "
        f"dense {before.median_ms:.3f} ms"
        + (f", pruned {after.median_ms:.3f} ms." if after is not None else "; pruned configuration missing.")))
    blocks.append(Table(("layer", "dense shape", "dense latency (alone)", "pruned shape", "pruned latency (alone)"),
                        tuple(rows), f"Single-op measurements from {source}; 'missing': that shape was not timed."))
    return blocks
