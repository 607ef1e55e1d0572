"""Benchmark: all-MiniLM-L6-v2 under a latency budget, allocator against allocator, over distillation seeds.

For each budget (share of the dense model's measured latency) and allocator, the CLI prunes `zoo:minilm` as a
user would (`toolchain prune --model zoo:minilm --budget-ratio B --allocator A`: whole heads and feed-forward
widths per layer, data-free l2 criterion, measured on cpu/onnxruntime, 1 thread, thread-CPU clock, min of the
timed runs; the latency predictor is found or built under runs/predictors). The written model's embeddings are
compared with the dense model's on the held-apart evaluation sentences (`toolchain.data.english_sentences`:
mean cosine, top-1 nearest-neighbour agreement), before and after the same fixed number of distillation steps
on the training sentences, once per seed (the seed orders the training sentences). Every method gets equal
recovery: a fixed step count, not a time bound.

    PYTHONPATH=. python benchmarks/minilm_allocators.py --budgets 0.7,0.55 --allocators lpnet,knapsack,uniform,macs \
        --seeds 1,2,3 --distill-steps 60 --out benchmarks/results/minilm-allocators

Writes rows.jsonl (one row per budget, allocator and seed, appended: a cut-short run keeps what it measured),
the CLI's manifests (manifests/) and summary.md (mean ± 95 % t-interval over seeds; each allocator minus
`uniform` and `macs`, paired by seed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks.sweep_stats import t_interval
from toolchain import load_pruned
from toolchain.data.english_sentences import load_english_sentences
from toolchain.embedding_quality import DistillConfig, compare_embeddings, distill_embeddings
from toolchain.models import create_model
from toolchain.models.minilm import SEQUENCE_LENGTH, embed, tokenize
from toolchain.threads import torch_threads


def prune_with_cli(budget: float, allocator: str, folder: Path) -> dict:
    """The user's command; returns the manifest it wrote (reused when the folder exists from a cut-short run)."""
    if not (folder / "manifest.json").is_file():
        command = [str(Path(sys.executable).with_name("toolchain")), "prune", "--model", "zoo:minilm",
                   "--budget-ratio", str(budget), "--allocator", allocator, "--out", str(folder), "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads((folder / "manifest.json").read_text())


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (`sweep_stats.t_interval`; 0 for one value)."""
    result = t_interval(values)
    return result["mean"], result["half_width"] or 0.0


def summary(rows: list[dict]) -> str:
    lines = ["# all-MiniLM-L6-v2 under a latency budget: allocators compared", "",
             "Mean cosine of pruned vs dense sentence embeddings (552 evaluation sentences), after the same fixed "
             "distillation steps; mean ± 95 % t-interval over seeds. Latency: what the CLI's budget loop measured "
             "(cpu/onnxruntime, 1 thread, thread-CPU, min of the timed runs).", "",
             "| budget | allocator | measured ms (budget) | cos before | top-1 NN before | cos after | top-1 NN after "
             "| − uniform (cos, paired) | − macs (cos, paired) |", "|---|---|---|---|---|---|---|---|---|"]
    by_point: dict[tuple[float, str], list[dict]] = {}
    for row in rows:
        by_point.setdefault((row["budget_ratio"], row["allocator"]), []).append(row)
    for (budget, allocator), points in sorted(by_point.items()):
        first = points[0]
        after = interval([p["distilled"]["mean_cosine"] for p in points])
        nn_after = statistics.fmean(p["distilled"]["top1_neighbour_agreement"] for p in points)
        cells = []
        for baseline in ("uniform", "macs"):
            others = {p["seed"]: p for p in by_point.get((budget, baseline), [])}
            paired = [p["distilled"]["mean_cosine"] - others[p["seed"]]["distilled"]["mean_cosine"]
                      for p in points if p["seed"] in others]
            cells.append("–" if baseline == allocator or not paired else "{:+.4f} ± {:.4f}".format(*interval(paired)))
        before = first["before"]
        lines.append(f"| {budget} | {allocator} | {first['measured_latency_ms']:.2f} ({first['budget_ms']:.2f}) "
                     f"| {before['mean_cosine']:.4f} | {100 * before['top1_neighbour_agreement']:.1f} % "
                     f"| {after[0]:.4f} ± {after[1]:.4f} | {100 * nn_after:.1f} % | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.7,0.55")
    parser.add_argument("--allocators", default="lpnet,knapsack,uniform,macs")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--distill-steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--out", default="benchmarks/results/minilm-allocators")
    parser.add_argument("--models", default="runs/minilm-allocators",
                        help="where the CLI writes the pruned folders (about 140 MB each: kept out of the results; "
                             "their manifests are copied to <out>/manifests)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["budget_ratio"], r["allocator"], r["seed"]) for r in rows}
    corpus = load_english_sentences()
    dense = create_model("minilm")
    with torch_threads(1):
        dense_eval, dense_train = embed(dense, corpus.evaluation), embed(dense, corpus.training)
    for budget in (float(b) for b in args.budgets.split(",")):
        for allocator in args.allocators.split(","):
            seeds = [int(s) for s in args.seeds.split(",") if (budget, allocator, int(s)) not in done]
            if not seeds:
                continue
            folder = Path(args.models) / f"budget{budget}-{allocator}"
            manifest = prune_with_cli(budget, allocator, folder)
            (out / "manifests").mkdir(exist_ok=True)
            (out / "manifests" / f"{folder.name}.json").write_text(json.dumps(manifest, indent=1) + "\n")
            pruned, _ = load_pruned(folder)
            with torch_threads(1):
                before = compare_embeddings(dense_eval, embed(pruned, corpus.evaluation))
            for seed in seeds:
                student = copy.deepcopy(pruned)
                with torch_threads(1):
                    report = distill_embeddings(
                        student, dense_train, list(corpus.training),
                        lambda s: tokenize(s, SEQUENCE_LENGTH, pad_to_longest=True),
                        DistillConfig(seconds=float("inf"), max_steps=args.distill_steps, batch_size=args.batch_size,
                                      lr=args.lr, seed=seed))
                    after = compare_embeddings(dense_eval, embed(student, corpus.evaluation))
                row = {"budget_ratio": budget, "allocator": allocator, "seed": seed,
                       "budget_ms": manifest["budget_ms"], "measured_latency_ms": manifest["measured_latency_ms"],
                       "predicted_latency_ms": manifest["predicted_latency_ms"],
                       "dense_latency_ms": manifest["dense_latency_ms"], "budget_met": manifest["budget_met"],
                       "tries": len(manifest["iterations"]), "params": manifest["params"],
                       "per_group_widths": manifest["per_group_widths"], "criterion": manifest["criterion"],
                       "before": asdict(before), "distilled": asdict(after),
                       "distillation": asdict(report), "load_average_1m": os.getloadavg()[0]}
                rows.append(row)
                with rows_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("budget_ratio", "allocator", "seed", "measured_latency_ms")}
                                 | {"cos_before": before.mean_cosine, "cos_after": after.mean_cosine}), flush=True)
                (out / "summary.md").write_text(summary(rows))
    (out / "summary.md").write_text(summary(rows))
    print(f"wrote {rows_path} and {out / 'summary.md'}")


if __name__ == "__main__":
    main()
