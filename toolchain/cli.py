"""The `toolchain` command line: thin wrappers that parse, call the API, and print."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from pathlib import Path

import click
from rich.console import Console

from toolchain.commands.input_options import input_option, trust_pickle_option
from toolchain.commands.validation import FRACTION_BELOW_ONE, POSITIVE_MS, ROUND_TO, SHARE, THREADS
from toolchain.errors import ToolchainError
from toolchain.models.sources import source_examples
from toolchain.shapes import parse_shape

stderr = Console(stderr=True)
MODEL_HELP = source_examples()


def model_options(func):
    """Options shared by every command that takes a model."""
    for option in reversed([
        click.option("--model", required=True, help=MODEL_HELP),
        click.option("--weights", type=click.Path(dir_okay=False), help="safetensors or .pt (weights_only)"),
        click.option("--input-shape", callback=parse_shape, help="one float input, e.g. 1,3,224,224 (default: the "
                                                                  "source's)"),
        input_option,
        trust_pickle_option,
    ]):
        func = option(func)
    return func


trust_model_file_option = click.option(
    "--trust-model-file", is_flag=True,
    help="with --pruned: import the file.py:factory its arch.json names (runs that file's code; off by default)")


class Steps:
    """Prints each long step as it starts (to stderr, so `--json` output stays clean)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            stderr.print(f"[dim]…[/dim] {message}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="toolchain")
def cli() -> None:
    """Hardware-aware deployment toolchain: measure, prune under a budget, shrink, verify, export."""


@cli.group()
def zoo() -> None:
    """The bundled model zoo."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def zoo_list(as_json: bool) -> None:
    """List zoo models with their example input shapes."""
    from toolchain.models import get_model_spec, list_models

    rows = [get_model_spec(n) for n in list_models()]
    if as_json:
        click.echo(json.dumps([{"name": s.name, "input_shape": list(s.input_shape), "task": s.task} for s in rows]))
        return
    for s in rows:
        click.echo(f"zoo:{s.name:<16} {'x'.join(map(str, s.input_shape)):<14} {s.description}")


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def targets_cmd(as_json: bool) -> None:
    """List deployment devices from the device table (with aliases and roofline facts)."""
    from toolchain.targets.devices import ALIASES, get_device, list_devices

    devices = [get_device(n) for n in list_devices()]
    if as_json:
        click.echo(json.dumps([{"name": d.name, "description": d.description, "cpu_triple": d.cpu_triple,
                                "cuda_sm": d.cuda_sm, "peak_flops_per_s": dict(d.peak_flops_per_s),
                                "memory_bandwidth_gb_per_s": d.memory_bandwidth_gb_per_s,
                                "aliases": sorted(a for a, t in ALIASES.items() if t == d.name)} for d in devices]))
        return
    for d in devices:
        aliases = sorted(a for a, t in ALIASES.items() if t == d.name)
        alias_text = f" (alias: {', '.join(aliases)})" if aliases else ""
        click.echo(f"{d.name:<14} {d.cpu_triple:<20} {d.cuda_sm or '-':<7} {d.description}{alias_text}")


def _pipeline_options(func):
    for option in reversed([
        click.option("--ratio", type=FRACTION_BELOW_ONE, default=0.5, show_default=True,
                     help="share of channels removed from every prunable group"),
        click.option("--round-to", type=ROUND_TO, default=8, show_default=True,
                     help="keep channel counts on multiples of this"),
        click.option("--protect", multiple=True, help="layer (module path) whose outputs are never pruned"),
        click.option("--data", help="mnist5k, cifar10:DIR, or file.py:function (default: mnist5k for zoo:demo)"),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True),
        click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON on stdout"),
    ]):
        func = option(func)
    return func


def _run_pipeline(model, weights, input_shape, inputs, trust_pickle, ratio, round_to, protect, data, out, as_json,
                  target="cpu", budget=None):
    from toolchain.deploy import PipelineConfig, write_pruned_folder
    from toolchain.pruning import PruneConfig

    config = PipelineConfig(model=model, out=out, weights=weights, input_shape=input_shape, inputs=inputs,
                            trust_pickle=trust_pickle, data=data,
                            prune=PruneConfig(ratio=ratio, round_to=round_to, protect=tuple(protect)), target=target,
                            budget=budget)
    # Libraries print on stdout (Torch-Pruning's batch-size warning for keyword inputs, Ultralytics' banners);
    # stdout is for the manifest, so `--json` output stays parseable.
    with contextlib.redirect_stdout(sys.stderr):
        manifest = write_pruned_folder(config, Steps(quiet=as_json))
    if as_json:
        click.echo(json.dumps(manifest, indent=1))
    else:
        _summary(manifest, out)


def _summary(manifest: dict, out: Path) -> None:
    click.echo(f"wrote {out}/ (model.onnx, arch.json, weights.safetensors, manifest.json)")
    click.echo(f"  params {manifest['dense_params']:,} -> {manifest['params']:,} "
               f"({manifest['params'] / manifest['dense_params']:.1%}); "
               f"MACs {manifest['dense_macs']:,} -> {manifest['macs']:,} "
               f"({manifest['macs'] / manifest['dense_macs']:.1%})")
    if "accuracy" in manifest:
        click.echo(f"  accuracy (measured on {manifest['accuracy_data']} test split): "
                   f"{manifest['dense_accuracy']:.2%} dense -> {manifest['accuracy']:.2%} pruned")
    click.echo(f"  ONNX verified against PyTorch: max relative error {manifest['onnx_max_rel_err']:.1e}")
    if "budget_ms" in manifest:
        met = "met" if manifest["budget_met"] else "MISSED"
        click.echo(f"  latency on {manifest['latency_target']['label']}: budget {manifest['budget_ms']:.3f} ms {met}; "
                   f"measured {manifest['measured_latency_ms']:.3f} ms "
                   f"(predicted {manifest['predicted_latency_ms']:.3f}, dense {manifest['dense_latency_ms']:.3f}); "
                   f"{manifest['criterion']} + {manifest['allocator']}")


def _budget_options(func):
    from toolchain.allocate import list_allocators
    from toolchain.commands.timing_options import clock_option, statistic_option
    from toolchain.saliency import list_criteria

    for option in reversed([
        click.option("--target", default="cpu", show_default=True, help="where latency is measured (with a budget)"),
        click.option("--backend", default=None, help="default: the target's default backend"),
        click.option("--threads", type=THREADS, default=1, show_default=True),
        clock_option,
        statistic_option,
        click.option("--budget-ms", type=POSITIVE_MS, help="latency budget in ms on the target (replaces --ratio)"),
        click.option("--budget-ratio", type=SHARE, help="budget as a share of the dense model's measured latency"),
        click.option("--criterion", type=click.Choice(list_criteria()), default="taylor", show_default=True),
        click.option("--allocator", type=click.Choice(list_allocators()), default="lpnet", show_default=True),
        click.option("--predictor", help="lpnet artifact folder (default: found or built under runs/predictors)"),
        click.option("--profile-samples", type=click.IntRange(min=10), default=100, show_default=True,
                     help="configurations measured when the predictor is built on the fly"),
        click.option("--finetune-steps", type=click.IntRange(min=0), default=0, show_default=True,
                     help="distillation fine-tuning steps after BN re-calibration (0: no fine-tuning)"),
        click.option("--shapley-samples", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Monte Carlo permutations per group for --criterion shapley (its cost bound)"),
    ]):
        func = option(func)
    return func


@cli.command("prune")
@model_options
@_pipeline_options
@_budget_options
def prune_cmd(target, backend, threads, clock, statistic, budget_ms, budget_ratio, criterion, allocator, predictor,
              profile_samples, finetune_steps, shapley_samples, **kwargs) -> None:
    """Physically remove channels and write a verified pruned-model folder.

    With --budget-ms or --budget-ratio the widths are chosen so that the model measured on --target meets
    the budget (predictor built on the fly if needed); otherwise --ratio removes that share everywhere.
    """
    job = None
    if budget_ms is not None or budget_ratio is not None:
        from toolchain.allocate import BudgetConfig
        from toolchain.budget import BudgetJob
        from toolchain.saliency import SaliencyConfig
        from toolchain.targets import Target

        measured_on = Target(target, backend, threads, clock, statistic, profile_samples=profile_samples)
        measured_on.resolve()  # an unknown target or backend fails here, before the model is loaded
        job = BudgetJob(
            BudgetConfig(budget_ms=budget_ms, budget_ratio=budget_ratio, criterion=criterion, allocator=allocator,
                         round_to=kwargs["round_to"], finetune_steps=finetune_steps, protect=tuple(kwargs["protect"])),
            measured_on, predictor,
            SaliencyConfig(shapley_samples=shapley_samples), on_progress=_progress_bar(kwargs["as_json"]))
    _run_pipeline(**kwargs, target=target, budget=job)


def _progress_bar(quiet: bool):
    """An `on_progress(done, total, what)` drawing a rich progress bar on stderr (for profiling on the fly)."""
    if quiet:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    state: dict = {}

    def on_progress(done: int, total: int, what: str) -> None:
        if "bar" not in state:
            state["bar"] = Progress(TextColumn("profiling {task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), console=stderr)
            state["bar"].start()
            state["task"] = state["bar"].add_task(what, total=total)
        state["bar"].update(state["task"], completed=done, total=total, description=what)
        if done >= total:
            state.pop("bar").stop()

    return on_progress


@cli.command("deploy")
@model_options
@click.option("--ratio", type=FRACTION_BELOW_ONE, default=0.5, show_default=True,
              help="share of channels removed from every prunable group")
@click.option("--round-to", type=ROUND_TO, default=8, show_default=True)
@click.option("--protect", multiple=True, help="layer (module path) whose outputs are never pruned")
@click.option("--data", help="mnist5k, cifar10:DIR, or file.py:function (default: mnist5k for zoo:demo)")
@click.option("--target", default="cpu", show_default=True, help="device from the device table (jetson = jetson-orin)")
@click.option("--precision", type=click.Choice(["fp16", "int8"]), default="fp16", show_default=True,
              help="TensorRT engine precision built on the device")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="default: dist/<target>/<model>")
@click.option("--rpc-tracker", help="HOST:PORT of the TVM RPC tracker the board is registered with")
@click.option("--rpc-key", help="the board's key at the tracker (e.g. jetson-orin)")
@click.option("--budget-ms", type=POSITIVE_MS, help="latency budget in ms, measured on this host (target cpu)")
@click.option("--budget-ratio", type=SHARE, help="budget as a share of the dense model's measured latency (cpu)")
@click.option("--criterion", default="taylor", show_default=True, help="saliency criterion (with a budget)")
@click.option("--allocator", default="lpnet", show_default=True, help="width allocator (with a budget)")
@click.option("--finetune-steps", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON on stdout")
def deploy_cmd(model, weights, input_shape, inputs, trust_pickle, ratio, round_to, protect, data, target, precision,
               out, rpc_tracker, rpc_key, budget_ms, budget_ratio, criterion, allocator, finetune_steps,
               as_json) -> None:
    """Prune for a target, export, verify, and write the deploy bundle with its manifest."""
    from toolchain.bundle import BundleConfig, default_out, latency_summary, write_bundle
    from toolchain.deploy import PipelineConfig
    from toolchain.pruning import PruneConfig
    from toolchain.targets.devices import get_device

    device = get_device(target)
    out = out or default_out(device.name, model)
    rpc = None
    if rpc_tracker or rpc_key:
        from toolchain.latency.rpc import parse_tracker
        from toolchain.targets import RpcEndpoint
        from toolchain.targets.devices import rpc_target_json

        if not (rpc_tracker and rpc_key):
            raise ToolchainError("--rpc-tracker and --rpc-key go together")
        rpc = RpcEndpoint(*parse_tracker(rpc_tracker), rpc_key, rpc_target_json(device))
    job = None
    if budget_ms is not None or budget_ratio is not None:
        if device.name != "cpu" and rpc is None:
            raise ToolchainError(f"a latency budget is met by measuring on the target; for {device.name} give the "
                                 "board with --rpc-tracker/--rpc-key (RPC_TRACKER/RPC_KEY), or use --ratio (the "
                                 "bundle then labels its latency as predicted)")
        from toolchain.allocate import BudgetConfig
        from toolchain.budget import BudgetJob
        from toolchain.targets import Target

        # Timed as the benchmarks time (Target's defaults): the thread-CPU clock here (wall on a board) and the
        # minimum of agreeing attempts. With the wall clock and the median, the on-the-fly predictor learnt the
        # host's slow spells and the final model's accuracy swung between fresh clones (26-71% on the demo).
        spec = Target("cpu", rpc=rpc)
        job = BudgetJob(BudgetConfig(budget_ms=budget_ms, budget_ratio=budget_ratio, criterion=criterion,
                                     allocator=allocator, round_to=round_to, finetune_steps=finetune_steps,
                                     protect=tuple(protect)),
                        spec, None, on_progress=_progress_bar(as_json))
    pipeline = PipelineConfig(model=model, out=out, weights=weights, input_shape=input_shape, inputs=inputs,
                              trust_pickle=trust_pickle, data=data,
                              prune=PruneConfig(ratio=ratio, round_to=round_to, protect=tuple(protect)),
                              target=device.name, budget=job)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the manifest
        manifest = write_bundle(BundleConfig(device=device.name, precision=precision, rpc=rpc), pipeline,
                                Steps(quiet=as_json))
    if as_json:
        click.echo(json.dumps(manifest, indent=1))
        return
    _summary(manifest, out)
    click.echo(f"  TVM library: {out}/{manifest['tvm']['library']}")
    click.echo(f"  {latency_summary(manifest['latency'], device.name)}")
    if "tensorrt" in manifest:
        click.echo(f"on the board: copy {out}/ there, then run ./build_engine.sh && python3 run.py model.engine")


@cli.command("export")
@click.option("--pruned", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="a folder written by `toolchain prune`")
@click.option("--model", help=f"or a dense model: {MODEL_HELP} (with --pruned: its factory)")
@click.option("--weights", type=click.Path(dir_okay=False))
@click.option("--input-shape", callback=parse_shape)
@input_option
@trust_pickle_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="the .onnx file")
@click.option("--opset", type=click.IntRange(min=17), default=17, show_default=True)
@trust_model_file_option
def export_cmd(pruned, model, weights, input_shape, inputs, trust_pickle, out, opset, trust_model_file) -> None:
    """Export a pruned folder (or a dense model) to ONNX, verified against PyTorch before it is written."""
    from toolchain.archive import arch_inputs, load_pruned
    from toolchain.export.onnx import export_onnx
    from toolchain.inputs import make_inputs, vocab_size_of
    from toolchain.models import resolve_model
    from toolchain.output_folder import check_writable

    if pruned is None and model is None:
        raise ToolchainError("give --pruned DIR or --model SPEC")
    check_writable(out)  # before the model is built and exported
    if pruned is not None:
        module, arch = load_pruned(pruned, model, trust_model_file)
        specs = arch_inputs(arch)
    else:
        module, specs = resolve_model(model, weights, input_shape, inputs, trust_pickle)
    example = make_inputs(specs, vocab_size_of(module))
    out.parent.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(module, example, out, opset)
    click.echo(f"wrote {exported.path} (opset {exported.opset}); max relative error vs PyTorch "
               f"{exported.max_rel_err:.1e}")


# Commands that live in their own modules (added by later features); absent ones are skipped.
_PLUGGED_COMMANDS = ["profile", "fit", "predict", "sparsify", "sweep", "report"]


def _register_plugged_commands() -> None:
    for name in _PLUGGED_COMMANDS:
        try:
            module = importlib.import_module(f"toolchain.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"toolchain.commands.{name}":
                continue
            raise
        cli.add_command(getattr(module, name))


_register_plugged_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI, turns `ToolchainError` into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="toolchain", standalone_mode=False)
    except ToolchainError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.UsageError as exc:  # one line, like every other bad input
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (MemoryError, RuntimeError) as exc:
        if not _is_allocation_failure(exc):
            raise
        click.echo(f"error: out of memory ({_first_line(exc)}); use a smaller --input-shape or batch", err=True)
        return 2
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_allocation_failure(exc: BaseException) -> bool:
    """MemoryError, or torch's RuntimeError for a tensor too large to allocate (an input shape out of reach)."""
    return isinstance(exc, MemoryError) or any(
        marker in str(exc) for marker in ("can't allocate memory", "DefaultCPUAllocator", "out of memory"))


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
