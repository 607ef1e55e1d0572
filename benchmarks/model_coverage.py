"""Coverage benchmark: every third-party registry entry, pruned at ratio 0.5 three ways, each classified.

Columns, each run in its own subprocess (address space capped, `--memory-gb`) with `--timeout-s` on the
pruning step (graph build, shrink, verification, export) and a hard kill at twice that plus start-up:
- `toolchain`: `toolchain prune --model SOURCE --ratio 0.5 --out DIR` when the CLI has a source for the
  library; otherwise the Python API (`toolchain.prune`, `export_onnx`, `verify_onnx`), labelled `api` in the
  `path` field with the CLI's reason;
- `tp_auto`: Torch-Pruning 1.6.1 alone, `MagnitudePruner` (L2 magnitude) with the layers that produce the
  model's outputs ignored automatically (what its examples do with `model.fc` / the classifier);
- `tp_hand`: the same plus the family's hand-written ignore list (heads, attention projections, YOLO Detect).

Every pruned model is then checked independently (`toolchain.coverage.checks`): output shapes, finite
outputs, fewer parameters, ONNX loaded and run in onnxruntime. Statuses:
ok; refused (one `error:` line / ToolchainError naming a module); unclear (a one-line refusal naming no
module); crash (traceback, other exit, killed); wrong (shapes changed, forward fails, non-finite, ONNX refused
by onnxruntime or mismatched, or a Torch-Pruning model that differs from its masked dense model, below);
unpruned (runs and verifies, no parameter removed); timeout.

Each result records wall `seconds` and the process's `cpu_seconds`: on a machine shared with other work the
wall time overstates the cost, so raise `--timeout-s` there and read the CPU seconds against the 60 s target.

Per family (library:family), the toolchain has beaten Torch-Pruning when (ok count, -bad count) is larger than
for the better Torch-Pruning column (bad = wrong + crash + timeout), a tie when equal, else is behind.

Both columns are held to one functional standard. The toolchain checks every shrink against the masked dense
model (the dense model with each removed channel zeroed where it is consumed, norms over channels computed
over the kept ones) and refuses beyond its fp32 tolerance (1e-4 relative). For Torch-Pruning the root of every
group its pruner removes is recorded, the same groups are derived again on an untouched dense copy and masked
the same way (`toolchain.coverage.masked_reference`); a model that passes the checks above but differs from that
reference by more than the same tolerance is `wrong`: attention heads regrouped channel by channel, or query/key
channels removed inside heads, are not the dense model with channels masked. The error is recorded as
`masked_max_rel_err`; where no reference can be built (a GroupNorm with several groups, a dense copy that does
not fit `--memory-gb` beside the model, one Torch-Pruning cannot trace again, over the time limit) the status
stays as the checks above give it and `masked_check` says why. The check runs after the timed pruning step and
is not counted in its seconds. This masked check of Torch-Pruning's models is only as sensitive as the
outputs: an output dominated by the classifier's bias hides most of the features' error (the registry wakes
classifiers initialised to zero). The toolchain's own check also compares every module output whose shape the
shrink left unchanged, and every layer output the shrink narrowed on its kept channels, with all-zero weights woken
and faded signals scaled back up (`toolchain.graph_probes`), which matters for the CLI column, whose models come
from their library's own initialisation (torchvision's ViT heads, timm's `zero_init_last` BatchNorms start at
zero, GoogLeNet's signal fades to nothing); its rows record `shrink_rel_err`, `shrink_module_outputs` and
`onnx_outputs_vary` (False: the model's outputs were the same for every input the ONNX check compared).

    python -m benchmarks.model_coverage --subset          # 20 models across the four libraries
    python -m benchmarks.model_coverage 'timm:*'          # entries by pattern; resumes an existing file
    python -m benchmarks.model_coverage --subset --report-only   # summary and Markdown from the file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

RESULTS_DIR = Path(__file__).parent / "results"
COLUMNS = ("toolchain", "tp_auto", "tp_hand")
STATUSES = ("ok", "refused", "unclear", "crash", "wrong", "unpruned", "timeout")
BAD_STATUSES = ("crash", "wrong", "timeout")
RESULT_MARK = "COVERAGE-RESULT "
RATIO = 0.5

# A fixed cross-library subset to prove the harness quickly (the full list is for after the fixes land).
SUBSET = (  # interleaved by library, so a partial run already spans all four
    "torchvision:resnet18", "timm:resnet50", "transformers:bert", "ultralytics:yolov8n",
    "torchvision:mobilenet_v3_small", "timm:efficientnet_b0", "transformers:vit", "ultralytics:yolo11n",
    "torchvision:shufflenet_v2_x0_5", "timm:regnety_008", "transformers:gpt2",
    "torchvision:deeplabv3_mobilenet_v3_large", "timm:ghostnet_100", "transformers:llama_gqa",
    "torchvision:vit_b_16", "timm:deit_tiny_patch16_224", "torchvision:efficientnet_b0", "timm:levit_128s",
    "torchvision:regnet_y_400mf", "timm:fastvit_t8",
)

# What the CLI says when it has no such model source or input option yet: fall back to the API.
CLI_SOURCE_MISSING = re.compile(r"malformed model spec|unknown model source|no such option|not a \.py file", re.I)


# ----------------------------------------------------------------------------------------------- worker side

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _refusal_status(message: str, model) -> str:
    from toolchain.coverage.checks import names_a_module

    return "refused" if "\n" not in message.strip() and names_a_module(message, model) else "unclear"


def _check_pruned(pruned, built, dense_outputs, dense_params: int, onnx_path: Path) -> dict:
    """Independent checks on a pruned model; `onnx_path` is exported here when it does not exist yet."""
    from toolchain.coverage.checks import (
        ONNX_MAX_REL_ERR,
        export_onnx_any_inputs,
        onnx_max_relative_error,
        parameter_count,
        run_outputs,
        shape_problem,
    )

    params_kept = parameter_count(pruned) / dense_params
    try:
        outputs = run_outputs(pruned, built.inputs)
    except Exception as exc:
        return {"status": "wrong", "detail": f"forward fails: {_first_line(exc)}", "params_kept": params_kept}
    problem = shape_problem(dense_outputs, outputs)
    if problem:
        return {"status": "wrong", "detail": problem, "params_kept": params_kept}
    if params_kept >= 1.0:  # the dense model itself: an ONNX failure here would be the exporter's, not the pruner's
        return {"status": "unpruned", "detail": "no parameter removed", "params_kept": params_kept}
    try:
        if not onnx_path.exists():
            export_onnx_any_inputs(pruned, built.inputs, onnx_path)
        error = onnx_max_relative_error(pruned, built.inputs, onnx_path)
    except Exception as exc:
        return {"status": "wrong", "detail": f"ONNX: {_first_line(exc)}", "params_kept": params_kept}
    if error > ONNX_MAX_REL_ERR:
        return {"status": "wrong", "detail": f"ONNX differs: max relative error {error:.1e}",
                "params_kept": params_kept}
    return {"status": "ok", "detail": "", "params_kept": params_kept, "onnx_max_rel_err": error}


def _output_layers(model, inputs) -> list:
    """The modules whose outputs are the model's outputs: a leaf's output tensor returned as is, else the
    last Linear/Conv run whose output width appears among an output's dimensions."""
    import torch
    from torch import nn

    from toolchain.inputs import call_model, flatten_outputs

    produced, order = {}, []

    def record(module, _inputs, output) -> None:  # returns None: a hook's return value replaces the output
        produced[id(output)] = module
        order.append((module, output))

    hooks = [m.register_forward_hook(record)
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            outputs = flatten_outputs(call_model(model, inputs))
    finally:
        for hook in hooks:
            hook.remove()
    found = []
    for output in outputs:
        module = produced.get(id(output))
        if module is None:
            for candidate, produced_output in reversed(order):
                width = candidate.out_features if isinstance(candidate, nn.Linear) else candidate.out_channels
                if isinstance(produced_output, torch.Tensor) and width in output.shape:
                    module = candidate
                    break
        if module is not None and all(module is not m for m in found):
            found.append(module)
    return found


def _run_torch_pruning(key: str, hand: bool, limit_s: int) -> dict:
    import copy

    import torch
    import torch_pruning as tp

    from toolchain.coverage import build, get_entry
    from toolchain.coverage.checks import parameter_count, run_outputs
    from toolchain.coverage.masked_reference import prune_recording_roots

    built = build(key, "bench")
    dense_outputs = run_outputs(built.model, built.inputs)
    dense_params = parameter_count(built.model)
    try:
        dense = copy.deepcopy(built.model)  # untouched, for the masked dense reference
    except Exception as exc:
        dense = f"the dense model cannot be copied: {_first_line(exc)}"
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        with _alarm(limit_s):
            ignored = _output_layers(built.model, built.inputs)
            if hand and get_entry(key).hand_ignore:
                ignored += [m for m in get_entry(key).hand_ignore(built.model) if all(m is not i for i in ignored)]
            pruner = tp.pruner.MagnitudePruner(built.model, built.inputs,
                                               importance=tp.importance.MagnitudeImportance(p=2),
                                               pruning_ratio=RATIO, ignored_layers=ignored)
            roots = prune_recording_roots(pruner)  # what step() does, recording each group's root
            del pruner
    except TimeoutError:
        return {"status": "timeout", "detail": f"over {limit_s} s", **_elapsed(start, cpu_start)}
    except Exception as exc:
        return {"status": "crash", "detail": _first_line(exc), **_elapsed(start, cpu_start)}
    elapsed = _elapsed(start, cpu_start)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        row = _check_pruned(built.model, built, dense_outputs, dense_params, Path(folder) / "model.onnx")
    if row["status"] == "ok":
        row = {**row, **_masked_check(built, dense, roots, limit_s)}
    return {**row, **elapsed}


def _masked_check(built, dense, roots: list, limit_s: int) -> dict:
    """Torch-Pruning's model against the dense one with the same channels masked (the toolchain's check):
    `masked_max_rel_err`, status `wrong` beyond the toolchain's tolerance, or `masked_check` saying why not
    (`dense` is the copy taken before pruning, or why none could be taken)."""
    from toolchain.coverage.checks import run_outputs
    from toolchain.coverage.masked_reference import MASKED_MAX_REL_ERR, masked_reference, max_relative_error

    if isinstance(dense, str):
        return {"masked_check": f"not possible: {dense}"}
    try:
        with _alarm(limit_s):
            reference, why_not = masked_reference(dense, built.inputs, roots)
    except TimeoutError:
        reference, why_not = None, f"over {limit_s} s"
    except Exception as exc:
        reference, why_not = None, _first_line(exc)
    if reference is None:
        return {"masked_check": f"not possible: {why_not}"}
    error = max_relative_error(reference, run_outputs(built.model, built.inputs))
    if error > MASKED_MAX_REL_ERR:
        return {"status": "wrong", "detail": f"differs from the masked dense model: max relative error {error:.1e}",
                "masked_max_rel_err": error}
    return {"masked_max_rel_err": error}


def _run_toolchain_api(built, limit_s: int) -> dict:
    from toolchain import ToolchainError, prune
    from toolchain.coverage.checks import parameter_count, run_outputs
    from toolchain.export.onnx import export_onnx, verify_onnx

    dense_outputs = run_outputs(built.model, built.inputs)
    dense_params = parameter_count(built.model)
    start, cpu_start = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        try:
            with _alarm(limit_s):
                result = prune(built.model, built.inputs, ratio=RATIO)
                export_onnx(result.model, built.inputs, onnx_path)
                verify_onnx(result.model, onnx_path, built.inputs)
        except TimeoutError:
            return {"status": "timeout", "detail": f"over {limit_s} s", **_elapsed(start, cpu_start)}
        except ToolchainError as exc:
            return {"status": _refusal_status(str(exc), built.model), "detail": f"error: {exc}",
                    **_elapsed(start, cpu_start)}
        except Exception as exc:
            return {"status": "crash", "detail": _first_line(exc), **_elapsed(start, cpu_start)}
        elapsed = _elapsed(start, cpu_start)
        return {**_check_pruned(result.model, built, dense_outputs, dense_params, onnx_path), **elapsed}


def _run_toolchain_cli(key: str, built, limit_s: int, workdir: Path) -> dict | None:
    """The CLI run, or None when the CLI has no source/option for this model yet (the caller falls back)."""
    from toolchain import load_pruned, resolve_model
    from toolchain.archive import arch_inputs
    from toolchain.coverage.checks import parameter_count, run_outputs

    spec = built.cli
    model_arg = spec.model.format(workdir=workdir)
    if spec.write_files:
        spec.write_files(model_arg.split(":", 1)[1])
    out = workdir / "pruned"
    command = [str(Path(sys.executable).with_name("toolchain")), "prune", "--model", model_arg, *spec.input_args,
               "--ratio", str(RATIO), "--out", str(out)]
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"over {limit_s} s", "seconds": time.perf_counter() - start,
                "path": "cli", "command": " ".join(command)}
    row = {"seconds": time.perf_counter() - start, "cpu_seconds": _children_cpu_seconds() - cpu_start,
           "path": "cli", "command": " ".join(command)}
    manifest_path = out / "manifest.json"
    if done.returncode == 0 and manifest_path.is_file():  # how much of the model the CLI's shrink check compared
        written = json.loads(manifest_path.read_text())
        row.update(shrink_rel_err=written.get("verified_relative_error"),
                   shrink_module_outputs=written.get("verified_module_outputs"),
                   onnx_outputs_vary=written.get("onnx_outputs_vary_with_input"))
    stderr_lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("…")]
    if done.returncode == 2 and len(stderr_lines) == 1 and stderr_lines[0].startswith("error:"):
        if CLI_SOURCE_MISSING.search(stderr_lines[0]):
            return None
        return {**row, "status": _refusal_status(stderr_lines[0], built.model), "detail": stderr_lines[0]}
    if done.returncode != 0:
        last = stderr_lines[-1] if stderr_lines else f"exit {done.returncode}"
        traceback = "Traceback" in done.stderr
        if not traceback and CLI_SOURCE_MISSING.search(done.stderr):
            return None
        prefix = "traceback: " if traceback else f"exit {done.returncode}: "
        return {**row, "status": "crash", "detail": prefix + last}
    try:
        pruned, _manifest = load_pruned(out)
    except Exception as exc:
        return {**row, "status": "crash", "detail": f"written folder does not load: {_first_line(exc)}"}
    # Parameters are compared with the model the CLI pruned, built again from its source: it may differ from the
    # registry's (torchvision's GoogLeNet keeps its training-only aux heads there, which no forward runs).
    dense_params = parameter_count(resolve_model(model_arg, inputs=arch_inputs(_manifest))[0])
    return {**_check_pruned(pruned, built, run_outputs(built.model, built.inputs), dense_params,
                            out / "model.onnx"), **row}


def _run_toolchain(key: str, limit_s: int) -> dict:
    from toolchain.coverage import build

    built = build(key, "bench")
    reason = "no command-line name for this model"
    if built.cli is not None:
        with tempfile.TemporaryDirectory() as folder:
            row = _run_toolchain_cli(key, built, limit_s, Path(folder))
        if row is not None:
            return row
        reason = f"the CLI has no {built.cli.model.split(':', 1)[0]}: source or --input option yet"
    return {**_run_toolchain_api(built, limit_s), "path": f"api ({reason})"}


def _elapsed(start: float, cpu_start: float) -> dict:
    """Wall seconds, and this process's CPU seconds (what the step costs on a machine shared with others)."""
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _alarm:
    """SIGALRM after `seconds`: the pruners' graph loops are Python, so it interrupts a stuck build."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        import signal

        def on_alarm(_signum, _frame):
            raise TimeoutError

        self.previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        import signal

        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)
        return False


def worker(key: str, column: str, limit_s: int) -> None:
    import torch

    torch.manual_seed(0)
    if column == "toolchain":
        row = _run_toolchain(key, limit_s)
    else:
        row = _run_torch_pruning(key, hand=column == "tp_hand", limit_s=limit_s)
    print(RESULT_MARK + json.dumps(row), flush=True)


# ----------------------------------------------------------------------------------------------- parent side

def _cap_memory(memory_bytes: int):
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return cap


def run_one(key: str, column: str, limit_s: int, memory_gb: float) -> dict:
    """One (entry, column) in a capped subprocess; a missing result line is classified from the exit."""
    command = [sys.executable, "-m", "benchmarks.model_coverage", "--worker", key, "--column", column,
               "--timeout-s", str(limit_s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_CONFIG_DIR": os.environ.get("YOLO_CONFIG_DIR") or
           tempfile.mkdtemp(prefix="toolchain-yolo-")}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=2 * limit_s + 120, env=env,
                              cwd=Path(__file__).parent.parent, preexec_fn=_cap_memory(int(memory_gb * 2**30)))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"killed after {2 * limit_s + 120} s", "seconds": None}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit {done.returncode}"]
    memory = " (memory cap?)" if done.returncode < 0 or "MemoryError" in done.stderr else ""
    return {"status": "crash", "detail": f"worker died{memory}: {tail[0][:300]}",
            "seconds": time.perf_counter() - start}


def environment() -> dict:
    from importlib.metadata import version

    import torch

    from benchmarks.sparse_kernels import cpu_model_name

    # Torch-Pruning's own __version__ string lags its release (1.6.0 in 1.6.1): the installed metadata is right.
    return {"cpu": cpu_model_name(), "machine": platform.machine(), "logical_cpus": os.cpu_count(),
            "torch": torch.__version__.split("+")[0], "torch_pruning": version("torch-pruning"),
            "python": platform.python_version(), "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()]}


def environment_name(info: dict) -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    return f"coverage-{cpu}-torch{info['torch']}-tp{info['torch_pruning']}"


def summarise(rows: dict[str, dict]) -> dict:
    """Counts per column, and per family whether the toolchain beats the better Torch-Pruning column."""
    def score(results: list[dict]) -> tuple[int, int]:
        return (sum(r["status"] == "ok" for r in results), -sum(r["status"] in BAD_STATUSES for r in results))

    by_family: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows.values():
        for column in COLUMNS:
            if column in row["columns"]:  # families are per library: timm's resnet is not torchvision's
                by_family[f"{row['library']}:{row['family']}"][column].append(row["columns"][column])
    families = {}
    for family, columns in sorted(by_family.items()):
        best_tp, ours = max(score(columns["tp_auto"]), score(columns["tp_hand"])), score(columns["toolchain"])
        compared = len(columns["toolchain"]) == len(columns["tp_auto"]) == len(columns["tp_hand"]) > 0
        verdict = "beaten" if ours > best_tp else "tie" if ours == best_tp else "behind"
        # Torch-Pruning as it comes, without the hand-written ignore list (the toolchain is given none)
        auto = score(columns["tp_auto"])
        automatic = "beaten" if ours > auto else "tie" if ours == auto else "behind"
        # a family whose Torch-Pruning rows were not (all) run is not compared: an empty column is no result
        families[family] = {"counts": {c: dict(Counter(r["status"] for r in columns[c])) for c in COLUMNS},
                            "versus_torch_pruning": verdict if compared else "not compared",
                            "versus_torch_pruning_automatic": automatic if compared else "not compared"}
    totals = {}
    for column in COLUMNS:
        results = [row["columns"][column] for row in rows.values() if column in row["columns"]]
        counts = Counter(r["status"] for r in results)
        totals[column] = {"models": len(results), "ok_percent": 100.0 * counts["ok"] / max(len(results), 1),
                          "wrong": counts["wrong"],
                          # a crash can be a clean one-line error (exit 2: error: ...); only Python's own
                          # traceback output counts here
                          "tracebacks": sum(r.get("detail", "").startswith("traceback:") for r in results),
                          "counts": dict(counts)}
    def tally(key: str) -> str:
        verdicts = Counter(f[key] for f in families.values())
        return (f"{verdicts['beaten']}/{len(families)} (tie {verdicts['tie']}, behind {verdicts['behind']}, "
                f"not compared {verdicts['not compared']})")

    return {"totals": totals, "families": families, "families_beaten": tally("versus_torch_pruning"),
            "families_beaten_automatic": tally("versus_torch_pruning_automatic")}


def _cell(result: dict | None) -> str:
    if result is None:
        return "-"
    seconds = result.get("seconds")
    timing = f" {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
    if isinstance(result.get("cpu_seconds"), (int, float)):
        timing += f" (cpu {result['cpu_seconds']:.1f}s)"
    kept = f" {result['params_kept']:.0%}" if result.get("status") == "ok" and "params_kept" in result else ""
    return f"{result['status']}{kept}{timing}"


def write_markdown(path: Path, payload: dict) -> None:
    summary = payload["summary"]
    lines = [f"# Model coverage at ratio {RATIO} ({payload['environment_name']})", "",
             f"Environment: {json.dumps(payload['environment'])}", "",
             f"Limits: {payload.get('timeout_s')} s per pruning step (wall), {payload.get('memory_gb')} GB of "
             f"address space per subprocess; {len(payload['rows'])} models.", "",
             "| column | models | ok % | wrong | tracebacks | statuses |", "|---|---|---|---|---|---|"]
    for column, total in summary["totals"].items():
        lines.append(f"| {column} | {total['models']} | {total['ok_percent']:.0f} | {total['wrong']} | "
                     f"{total['tracebacks']} | {total['counts']} |")
    lines += ["", f"Families where the toolchain beats Torch-Pruning's better column: {summary['families_beaten']}",
              "", "Families where it beats Torch-Pruning without a hand-written ignore list: "
              f"{summary.get('families_beaten_automatic', '-')}", "",
              "| family | toolchain | Torch-Pruning (auto ignore) | Torch-Pruning (hand ignore) | toolchain vs TP "
              "| vs TP auto |", "|---|---|---|---|---|---|"]
    for family, info in summary["families"].items():
        counts = info["counts"]
        lines.append(f"| {family} | {counts['toolchain']} | {counts['tp_auto']} | {counts['tp_hand']} | "
                     f"{info['versus_torch_pruning']} | {info.get('versus_torch_pruning_automatic', '-')} |")
    lines += ["", "| model | family | toolchain | path | tp_auto | tp_hand | toolchain detail |",
              "|---|---|---|---|---|---|---|"]
    for key, row in sorted(payload["rows"].items()):
        columns = row["columns"]
        toolchain = columns.get("toolchain", {})
        detail = toolchain.get("detail", "").replace("|", "/")[:160]
        lines.append(f"| {key} | {row['family']} | {_cell(toolchain or None)} | {toolchain.get('path', '-')} | "
                     f"{_cell(columns.get('tp_auto'))} | {_cell(columns.get('tp_hand'))} | {detail} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="entry patterns, e.g. 'timm:*' (default: every entry)")
    parser.add_argument("--subset", action="store_true", help=f"the fixed {len(SUBSET)}-model subset")
    parser.add_argument("--columns", default=",".join(COLUMNS), help="comma-separated subset of " + ",".join(COLUMNS))
    parser.add_argument("--timeout-s", type=int, default=60, help="limit on each pruning step")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space cap per subprocess")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", help="results file stem (default: named by the environment)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the summary and Markdown from the existing results file, run nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--column", choices=COLUMNS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.column, args.timeout_s)
        return 0

    from fnmatch import fnmatch

    from toolchain.coverage import get_entry, list_entries

    keys = list(SUBSET) if args.subset else [k for k in list_entries()
                                             if not args.patterns or any(fnmatch(k, p) for p in args.patterns)]
    columns = [c for c in args.columns.split(",") if c]
    info = environment()
    stem = args.name or environment_name(info) + ("-subset" if args.subset else "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    payload = json.loads(json_path.read_text()) if json_path.exists() else {"rows": {}}
    if not args.report_only:  # a report keeps the environment and limits the results were measured under
        payload.update(environment=info, environment_name=environment_name(info), ratio=RATIO,
                       timeout_s=args.timeout_s, memory_gb=args.memory_gb)
    for key in [] if args.report_only else keys:
        entry = get_entry(key)
        row = payload["rows"].setdefault(key, {"library": entry.library, "family": entry.family, "columns": {}})
        for column in columns:
            if column in row["columns"]:
                continue  # resumable: an existing result is kept
            result = run_one(key, column, args.timeout_s, args.memory_gb)
            row["columns"][column] = result
            print(f"{key:45s} {column:10s} {_cell(result):22s} {result.get('detail', '')[:110]}", flush=True)
            payload["summary"] = summarise(payload["rows"])
            tmp = json_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(payload, indent=1))
            shutil.move(tmp, json_path)  # after every result: an interrupted run resumes from here
            write_markdown(json_path.with_suffix(".md"), payload)
    payload["summary"] = summarise(payload["rows"])
    json_path.write_text(json.dumps(payload, indent=1))
    write_markdown(json_path.with_suffix(".md"), payload)
    print(json.dumps(payload["summary"]["totals"], indent=1))
    print(f"families beaten: {payload['summary']['families_beaten']}; wrote {json_path} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
