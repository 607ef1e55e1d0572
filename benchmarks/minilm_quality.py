"""all-MiniLM-L6-v2 pruned: measured onnxruntime latency vs embedding quality, with and without distillation.

For each feed-forward ratio (and head ratio, where the graph prunes whole heads), the zoo model is pruned
(verified by the graph's check), exported to ONNX with named int64 inputs at sequence length 128, checked
against PyTorch in onnxruntime and timed there (1 thread; statistic and clock as given, under the shared
measurement lock). Quality is measured on the held-apart evaluation sentences of
`toolchain.data.english_sentences`: cosine of pruned vs dense embeddings and top-1 nearest-neighbour
agreement, before and after a time-bounded distillation on the training sentences.

    PYTHONPATH=. python benchmarks/minilm_quality.py --feed-forward-ratios 0,0.25,0.5,0.75 --distill-seconds 90

Writes benchmarks/results/minilm-quality-<environment>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import torch

from toolchain.archive import load_pruned
from toolchain.data.english_sentences import load_english_sentences
from toolchain.embedding_quality import DistillConfig, compare_embeddings, distill_embeddings
from toolchain.errors import ToolchainError
from toolchain.export.onnx import compare_with_pytorch
from toolchain.graph import PruningGraph
from toolchain.latency.measure import CLOCKS, STATISTICS, MeasureConfig, measure
from toolchain.models import create_model, model_example_inputs
from toolchain.models.minilm import SEQUENCE_LENGTH, embed, tokenize
from toolchain.targets import get_target, measurement_lock
from toolchain.threads import torch_threads
from toolchain.transformer_pruning import (
    CRITERIA,
    BudgetSearchConfig,
    TransformerPruneConfig,
    attention_head_groups,
    prune_transformer,
    prune_transformer_to_budget,
)

CALIBRATION_SENTENCES = 128  # training sentences the activation criterion reads (4 batches of 32)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def measured_latency(model, inputs, config: MeasureConfig) -> dict:
    """Export, verify in onnxruntime, then time there (the lock keeps other benchmarks' timings apart)."""
    target = get_target("cpu", "onnxruntime", threads=1)
    with torch_threads(1):
        runner = target.prepare(model, inputs)  # the backend every cpu timing uses: named int64 inputs kept
        def run_onnx(arrays):
            return runner.session.run(None, dict(zip(runner.feeds, arrays, strict=True)))

        onnx_error = compare_with_pytorch(model, run_onnx, inputs, "ONNX model", n_random=0)
    with measurement_lock():
        result = measure(runner, config)
    return {"latency_ms": result.value(config.statistic), "median_ms": result.median_ms, "min_ms": result.min_ms,
            "iqr_ms": result.iqr_ms, "attempts": result.attempts, "stable": result.stable,
            "onnx_max_rel_error": onnx_error}


def run_point(dense, inputs, config: TransformerPruneConfig, dense_eval, corpus, dense_train, calibration, args,
              measure_config: MeasureConfig) -> dict:
    started = time.monotonic()
    with torch_threads(1):
        pruned = prune_transformer(dense, inputs, config, calibration)
    manifest = pruned.manifest
    feed_forward = manifest["transformer_prune"]["feed_forward_groups"]
    heads = manifest["transformer_prune"]["head_groups"]
    row = {
        "criterion": config.criterion,
        "feed_forward_ratio": config.feed_forward_ratio,
        "head_ratio": config.head_ratio,
        "feed_forward_widths": sorted({manifest["per_group_widths"][g] for g in feed_forward}),
        "head_group_widths": sorted({manifest["per_group_widths"][g] for g in heads}),
        "params": manifest["params"],
        "dense_params": manifest["dense_params"],
        "macs": manifest["macs"],
        "dense_macs": manifest["dense_macs"],
        "prune_s": round(time.monotonic() - started, 1),
    }
    distill = config.feed_forward_ratio > 0 or config.head_ratio > 0
    return _timed_and_evaluated(row, copy.deepcopy(pruned.model), inputs, dense_eval, corpus, dense_train, args,
                                measure_config, distill)


def _timed_and_evaluated(row: dict, model, inputs, dense_eval, corpus, dense_train, args,
                         measure_config: MeasureConfig, distill: bool = True) -> dict:
    """Time `model`, compare its embeddings with the dense ones, then distil it in place (when asked and
    `--distill-seconds` > 0) and compare again; the row gets latency, quality and quality_distilled."""
    row.update(measured_latency(model, inputs, measure_config))
    with torch_threads(1):
        row["quality"] = asdict(compare_embeddings(dense_eval, embed(model, corpus.evaluation)))
        if distill and args.distill_seconds > 0:
            report = distill_embeddings(model, dense_train, list(corpus.training),
                                        lambda s: tokenize(s, SEQUENCE_LENGTH, pad_to_longest=True),
                                        DistillConfig(seconds=args.distill_seconds, batch_size=args.batch_size,
                                                      lr=args.lr))
            row["distillation"] = asdict(report)
            row["quality_distilled"] = asdict(compare_embeddings(dense_eval, embed(model, corpus.evaluation)))
    print(json.dumps(row), flush=True)
    return row


def run_folder(folder: Path, inputs, dense_eval, corpus, dense_train, args, measure_config: MeasureConfig) -> dict:
    """A pruned-model folder the CLI wrote (`toolchain prune --model zoo:minilm --budget-ratio r`): re-timed and
    its embeddings compared like the grid's points; the budget search's own figures kept from its manifest."""
    model, _arch = load_pruned(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    budget = {key: manifest.get(key) for key in ("budget_ms", "budget_ratio", "budget_met", "budget_statistic",
                                                  "dense_latency_ms", "predicted_latency_ms", "measured_latency_ms")}
    row = {
        "criterion": f"cli: {manifest.get('criterion')} + {manifest.get('allocator')}",
        "folder": str(folder),
        "feed_forward_ratio": None,
        "head_ratio": None,
        "per_group_widths": manifest.get("per_group_widths"),
        "feed_forward_widths": [],
        "params": manifest["params"],
        "dense_params": manifest["dense_params"],
        "macs": manifest["macs"],
        "dense_macs": manifest["dense_macs"],
        "budget": budget,
    }
    return _timed_and_evaluated(row, model, inputs, dense_eval, corpus, dense_train, args, measure_config)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def markdown_report(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"# all-MiniLM-L6-v2 pruned: latency vs quality ({env['cpu_model']})",
        "",
        f"Latency: cpu/onnxruntime {env['onnxruntime']}, 1 thread, sequence length {result['sequence_length']}, "
        f"statistic `{result['statistic']}` of the timed runs, clock `{result['clock']}`; {result['machine_note']}",
        f"Quality: {result['evaluation_sentences']} evaluation sentences, distillation on "
        f"{result['training_sentences']} held-apart sentences for {result['distill_seconds']} s "
        f"(batch {result['batch_size']}, lr {result['lr']}, loss 1 - cosine). Source: {result['corpus']}.",
        f"Pruned: {result['pruned_dims']}",
        "",
        "| criterion | FFN ratio | head ratio | FFN width | params (M) | MACs (G) | latency (ms) | speed-up "
        "| cos mean / min | top-1 NN | distilled: cos mean / min | distilled: top-1 NN | distill steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dense_ms = result["rows"][0]["latency_ms"]
    for row in result["rows"]:
        quality, distilled = row["quality"], row.get("quality_distilled")
        lines.append(
            f"| {row['criterion'] if row['feed_forward_ratio'] != 0 or row['head_ratio'] != 0 else 'dense'} "
            f"| {row['feed_forward_ratio'] if 'folder' not in row else 'per layer'} "
            f"| {row['head_ratio'] if 'folder' not in row else 'per layer'} "
            f"| {'/'.join(map(str, row['feed_forward_widths']))} "
            f"| {row['params'] / 1e6:.2f} | {row['macs'] / 1e9:.2f} | {row['latency_ms']:.2f} "
            f"| {dense_ms / row['latency_ms']:.2f}x | {quality['mean_cosine']:.4f} / {quality['min_cosine']:.4f} "
            f"| {_pct(quality['top1_neighbour_agreement'])} "
            + (f"| {distilled['mean_cosine']:.4f} / {distilled['min_cosine']:.4f} "
               f"| {_pct(distilled['top1_neighbour_agreement'])} | {row['distillation']['steps']} |"
               if distilled else "| – | – | – |"))
    for search in result["budget_searches"]:
        tries = ", ".join(f"{t['feed_forward_ratio']} -> {t['measured_latency_ms']:.2f} ms"
                          for t in search["tries"])
        found = (f"FFN ratio {search['found_feed_forward_ratio']} at {search['measured_latency_ms']:.2f} ms"
                 if search["found_feed_forward_ratio"] is not None else "nothing within the budget")
        lines += ["", f"Budget {search['budget_ms']:.2f} ms ({search['budget_fraction']} x dense, criterion "
                      f"{search['criterion']}): {found}; tries (FFN ratio -> measured): {tries}."]
    for note in result["notes"]:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feed-forward-ratios", default="0,0.25,0.5,0.75")
    parser.add_argument("--head-ratios", default="0", help="share of heads removed per layer (needs head groups)")
    parser.add_argument("--criteria", default="magnitude,activation", help=f"from {', '.join(CRITERIA)}")
    parser.add_argument("--budget-fractions", default="",
                        help="latency budgets as fractions of the dense measured latency, e.g. 0.8,0.7 "
                             "(bisection on measured latency, activation criterion)")
    parser.add_argument("--budget-tries", type=int, default=6)
    parser.add_argument("--distill-seconds", type=float, default=90.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--cli-folders", default="",
                        help="pruned-model folders written by `toolchain prune --model zoo:minilm --budget-*`, "
                             "comma-separated: re-timed and evaluated like the grid's points")
    parser.add_argument("--statistic", choices=STATISTICS, default="min")
    parser.add_argument("--clock", choices=list(CLOCKS), default="thread_cpu")
    parser.add_argument("--machine-note", default="2-vCPU shared development machine, loaded by other jobs")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.manual_seed(0)

    measure_config = MeasureConfig(statistic=args.statistic, clock=args.clock, min_timed_ms=100.0)
    corpus = load_english_sentences()
    dense = create_model("minilm")
    inputs = model_example_inputs("minilm")
    with torch_threads(1):
        dense_eval = embed(dense, corpus.evaluation)
        dense_train = embed(dense, corpus.training)
    calibration = [tokenize(list(corpus.training[i:i + 32]), SEQUENCE_LENGTH, pad_to_longest=True)
                   for i in range(0, CALIBRATION_SENTENCES, 32)]
    notes = []
    head_ratios = [float(r) for r in args.head_ratios.split(",")]
    if not attention_head_groups(PruningGraph(copy.deepcopy(dense), inputs)) and any(r > 0 for r in head_ratios):
        notes.append("Head ratios > 0 were asked for but the graph offers no whole-head groups for Hugging Face "
                     "BERT attention yet; only feed-forward widths were pruned.")
        head_ratios = [0.0]
    versions = {name: metadata.version(name) for name in ("torch", "onnxruntime", "transformers", "torch-pruning")}
    environment = {"cpu_model": _cpu_model(), **versions}
    rows, budget_searches = [], []
    result = {
        "environment": environment,
        "sequence_length": SEQUENCE_LENGTH,
        "statistic": args.statistic,
        "clock": args.clock,
        "machine_note": args.machine_note,
        "corpus": corpus.source,
        "evaluation_sentences": len(corpus.evaluation),
        "training_sentences": len(corpus.training),
        "distill_seconds": args.distill_seconds,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "pruned_dims": "feed-forward widths (intermediate.dense -> output.dense) of all 6 layers" + (
            " and whole attention heads" if any(r > 0 for r in head_ratios) else
            "; attention heads and the 384-d hidden width kept"),
        "criteria": args.criteria.split(","),
        "calibration_sentences": CALIBRATION_SENTENCES,
        "rows": rows,
        "budget_searches": budget_searches,
        "notes": notes,
    }
    name = (f"minilm-quality-{_slug(environment['cpu_model'])}-ort{versions['onnxruntime']}"
            f"-torch{versions['torch']}-1t-{args.clock}-{args.statistic}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: a long run cut short keeps what it measured
        (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{name}.md").write_text(markdown_report(result))

    feed_forward_ratios = [float(r) for r in args.feed_forward_ratios.split(",")]
    for criterion in args.criteria.split(","):
        for head_ratio in head_ratios:
            for feed_forward_ratio in feed_forward_ratios:
                if rows and feed_forward_ratio == 0 and head_ratio == 0:
                    continue  # the dense model is measured once
                config = TransformerPruneConfig(feed_forward_ratio, head_ratio, criterion=criterion)
                try:
                    rows.append(run_point(dense, inputs, config, dense_eval, corpus, dense_train, calibration, args,
                                          measure_config))
                except ToolchainError as error:
                    notes.append(f"{criterion}, FFN ratio {feed_forward_ratio}, head ratio {head_ratio}: refused: "
                                 f"{error}")
                save()
    if args.cli_folders:
        result["pruned_dims"] += ("; cli rows: whole heads and feed-forward widths per layer as the CLI's budget run "
                                  "chose them (per_group_widths in the JSON)")
    for folder in (Path(f) for f in args.cli_folders.split(",") if f):
        rows.append(run_folder(folder, inputs, dense_eval, corpus, dense_train, args, measure_config))
        save()
    dense_rows = [r for r in rows if r["feed_forward_ratio"] == 0 and r["head_ratio"] == 0]
    for fraction in (float(f) for f in args.budget_fractions.split(",") if f):
        budget_ms = fraction * dense_rows[0]["latency_ms"]

        def measure_ms(model) -> float:
            return measured_latency(model, inputs, measure_config)["latency_ms"]

        base = TransformerPruneConfig(criterion="activation")
        with torch_threads(1):
            search = prune_transformer_to_budget(dense, inputs, BudgetSearchConfig(budget_ms, args.budget_tries),
                                                 measure_ms, base, calibration)
        found = search.result.manifest["transformer_prune"]["feed_forward_ratio"] if search.result else None
        entry = {"budget_fraction": fraction, "budget_ms": budget_ms, "criterion": base.criterion,
                 "found_feed_forward_ratio": found, "measured_latency_ms": search.measured_latency_ms,
                 "tries": search.tries}
        print(json.dumps(entry), flush=True)
        budget_searches.append(entry)
        if found is not None:
            rows.append(run_point(dense, inputs, replace(base, feed_forward_ratio=found), dense_eval, corpus,
                                  dense_train, calibration, args, measure_config))
        save()
    save()
    print(f"wrote {out / name}.json and .md")

if __name__ == "__main__":
    main()
