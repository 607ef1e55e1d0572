"""The CLI's options, each defined once, and the groups the commands take them in.

Groups: `model_options` (what to build), `target_options` (where and how latency is measured),
`pruning_options` (ratio pruning and its data), `budget_options` (pruning under a latency budget),
`rpc_options` (a board behind a TVM RPC tracker); single options (`out_option`, `json_option`, ...) for
commands that take only some. A group is a decorator: `@model_options`.

Defaults of the measurement policy come from `toolchain.defaults`, those of a library config from that config,
so the CLI measures and prunes as the API does. Names are checked at parse time against their registries; an
unknown one is the registry's own one-line error ("unknown criterion 'x'; valid: …"), which `toolchain`
prints as `error: …` with exit code 2 before any model is built.

    >>> @click.command()
    ... @model_options
    ... def show(model, weights, input_shape, inputs, trust_pickle): ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from toolchain import defaults
from toolchain.allocate import BudgetConfig, list_allocators
from toolchain.budget_timing import BUDGET_STATISTICS
from toolchain.bundle import ENGINE_PRECISIONS, BundleConfig
from toolchain.commands.validation import (
    FRACTION_BELOW_ONE,
    POSITIVE_MS,
    ROUND_TO,
    SHARE,
    THREADS,
    count,
    finite_float,
)
from toolchain.errors import ToolchainError
from toolchain.inputs import DTYPES, InputSpec, InputSpecs
from toolchain.latency.measure import CLOCKS, STATISTICS
from toolchain.latency.provision import PROFILE_DB
from toolchain.models.sources import source_examples
from toolchain.pruning import PruneConfig
from toolchain.recover import RecoveryConfig
from toolchain.saliency import SaliencyConfig, get_criterion, list_criteria
from toolchain.shapes import parse_shape
from toolchain.targets import AUTO_CLOCK, get_target, list_targets
from toolchain.targets.devices import ALIASES, get_device, list_devices

Decorator = Callable[[Callable], Callable]
MODEL_HELP = source_examples()
# The CLI's default saliency criterion for prune and deploy: `auto` is taylor (the one the README's `make deploy`
# results were taken with) where there is data, l2 (data-free) where there is none (toolchain.budget).
DEFAULT_CRITERION = "auto"


class RegistryChoice(click.ParamType):
    """A name from a registry, checked at parse time; `--help` lists the registered names.

    An unknown name raises the registry's own `ToolchainError` (through `lookup` where the registry has a
    lookup with its own message, such as the device table's aliases), so the CLI and the API word it alike.
    """

    def __init__(self, what: str, names: Callable[[], Iterable[str]], lookup: Callable[[str], object] | None = None):
        self.name = what
        self._names = names
        self._lookup = lookup

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        if self._lookup is not None:
            self._lookup(value)  # raises for an unknown name; returns for one it resolves (an alias)
            return value
        raise ToolchainError(f"unknown {self.name} {value!r}; valid: {', '.join(self.choices)}")

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.choices)}]"


class RegistryList(RegistryChoice):
    """A comma-separated list of registered names, e.g. `l1,taylor` -> ('l1', 'taylor')."""

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):  # already converted (a default given as a tuple)
            return value
        names = tuple(name.strip() for name in value.split(",") if name.strip())
        if not names:
            raise ToolchainError(f"unknown {self.name} {value!r}; valid: {', '.join(self.choices)}")
        for name in names:
            super().convert(name, param, ctx)
        return names

    def get_metavar(self, param, ctx=None) -> str:
        return f"{self.name.upper()}[,...]"


def _target_name(name: str) -> None:
    get_target(name)  # only reached for a name the registry lacks: raises "unknown target …; valid: …"


CRITERIA = RegistryChoice("criterion", lambda: ["auto", *list_criteria()], get_criterion)
ALLOCATORS = RegistryChoice("allocator", list_allocators)
TARGETS = RegistryChoice("target", lambda: list(list_targets()), _target_name)
DEVICES = RegistryChoice("device", lambda: [*list_devices(), *ALIASES], get_device)
CRITERION_LIST = RegistryList("criterion", list_criteria, get_criterion)
ALLOCATOR_LIST = RegistryList("allocator", list_allocators)


def _backends() -> list[str]:
    return sorted({backend for backends in list_targets().values() for backend in backends})


def group(*options: Decorator) -> Decorator:
    """One decorator applying `options` in the order given (the order `--help` lists them in)."""
    def apply(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func
    return apply


# --- model ---------------------------------------------------------------------------------------------------

def _parse_inputs(_ctx, _param, values: tuple[str, ...]) -> InputSpecs:
    """click callback: every `--input` parsed strictly, names unique."""
    specs = []
    for text in values:
        try:
            specs.append(InputSpec.parse(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise click.BadParameter(f"input {repeated[0]!r} given more than once")
    return tuple(specs)


def model_option(required: bool = True, help: str = MODEL_HELP) -> Decorator:
    return click.option("--model", required=required, help=help)


weights_option = click.option("--weights", type=click.Path(dir_okay=False), help="safetensors or .pt (weights_only)")
input_shape_option = click.option("--input-shape", callback=parse_shape,
                                  help="one float input, e.g. 1,3,224,224 (default: the source's)")
# `--input NAME:DTYPE:SHAPE` (repeatable) names each forward() argument with its dtype and shape; `--input-shape`
# stays the shortcut for one float tensor.
input_option = click.option(
    "--input", "inputs", multiple=True, callback=_parse_inputs, metavar="NAME:DTYPE:SHAPE",
    help=f"a named model input, repeatable (dtype: {', '.join(DTYPES)}), e.g. input_ids:int64:1,128; "
         "integer ids are drawn inside the model's vocabulary, *mask inputs are all ones")
trust_pickle_option = click.option(
    "--trust-pickle", is_flag=True,
    help="allow pickle checkpoints (e.g. ultralytics:best.pt): loading one runs code it contains")
trust_model_file_option = click.option(
    "--trust-model-file", is_flag=True,
    help="with --pruned: import the file.py:factory its arch.json names (runs that file's code; off by default)")
pruned_option = click.option("--pruned", type=click.Path(file_okay=False, exists=True, path_type=Path),
                             help="a pruned-model folder written by `toolchain prune`")
model_options = group(model_option(), weights_option, input_shape_option, input_option, trust_pickle_option)


# --- target and timing ---------------------------------------------------------------------------------------

def target_option(default: str | None = defaults.TARGET, help: str = "where latency is measured") -> Decorator:
    return click.option("--target", type=TARGETS, default=default, show_default=default is not None, help=help)


def backend_option(help: str = "default: the target's default backend") -> Decorator:
    return click.option("--backend", default=defaults.BACKEND, metavar=f"[{'|'.join(_backends())}]", help=help)


def threads_option(default: int | None = defaults.THREADS) -> Decorator:
    return click.option("--threads", type=THREADS, default=default, show_default=default is not None)


clock_option = click.option(
    "--clock", type=click.Choice([AUTO_CLOCK, *CLOCKS]), default=defaults.CLOCK, show_default=True,
    help="auto: thread_cpu (CPU time of the timing thread) for 1-thread cpu targets timed here, wall elsewhere")
statistic_option = click.option(
    "--statistic", type=click.Choice(STATISTICS), default=defaults.STATISTIC, show_default=True,
    help="a measurement's latency: min of the timed runs, re-measured until two attempts agree (repeatable on "
         "a shared machine), or median, re-measured while the spread is wide")


def checked_backend(func: Callable) -> Callable:
    """Refuses a backend its target lacks before the command runs, in the registry's words.

    `--backend` is checked here rather than by its type because the valid backends depend on `--target`,
    which click may parse after it.
    """
    @functools.wraps(func)
    def command(**params):
        target, backend = params.get("target"), params.get("backend")
        if target is not None and backend is not None and backend not in list_targets()[target]:
            get_target(target, backend)  # raises "unknown backend 'x' for target 'y'; valid: …"
        return func(**params)
    return command


target_options = group(checked_backend, target_option(), backend_option(), threads_option(), clock_option,
                       statistic_option)
device_option = click.option("--target", type=DEVICES, default=defaults.TARGET, show_default=True,
                             help="device from the device table (jetson = jetson-orin)")
precision_option = click.option("--precision", type=click.Choice(ENGINE_PRECISIONS), default=BundleConfig.precision,
                                show_default=True, help="TensorRT engine precision built on the device")
rpc_options = group(
    click.option("--rpc-tracker", help="HOST:PORT of the TVM RPC tracker the board is registered with"),
    click.option("--rpc-key", help="the board's key at the tracker (e.g. jetson-orin)"))


def rpc_endpoint(rpc_tracker: str | None, rpc_key: str | None, tvm_target_json: str = ""):
    """The board `rpc_options` name (a `toolchain.targets.RpcEndpoint`), or None without them."""
    if not (rpc_tracker or rpc_key):
        return None
    if not (rpc_tracker and rpc_key):
        raise ToolchainError("--rpc-tracker and --rpc-key go together")
    from toolchain.latency.rpc import parse_tracker
    from toolchain.targets import RpcEndpoint

    return RpcEndpoint(*parse_tracker(rpc_tracker), rpc_key, tvm_target_json)


db_option = click.option("--db", "db_path", default=PROFILE_DB, show_default=True,
                         help="the measurement database (SQLite)")


# --- pruning ---------------------------------------------------------------------------------------------------

data_option = click.option("--data", help="mnist5k, cifar10:DIR, or file.py:function (default: mnist5k for zoo:demo)")
pruning_options = group(
    click.option("--ratio", type=FRACTION_BELOW_ONE, default=PruneConfig.ratio, show_default=True,
                 help="share of channels removed from every prunable group"),
    click.option("--round-to", type=ROUND_TO, default=PruneConfig.round_to, show_default=True,
                 help="keep channel counts on multiples of this"),
    click.option("--protect", multiple=True, help="layer (module path) whose outputs are never pruned"),
    data_option)
predictor_option = click.option("--predictor",
                                help="lpnet artifact folder (default: found or built under runs/predictors)")
profile_samples_option = click.option(
    "--profile-samples", type=click.IntRange(min=10), default=defaults.PROFILE_SAMPLES, show_default=True,
    help="configurations measured when the predictor is built on the fly")
finetune_steps_option = click.option(
    "--finetune-steps", type=count(0), default=0, show_default=True,
    help="distillation fine-tuning steps after BN re-calibration, the same for every point (0: no fine-tuning)")
# prune and deploy recover by default (time-bounded distillation); these three choose how (RecoveryConfig).
recovery_options = group(
    click.option("--recover-seconds", type=finite_float(min=0.0), default=RecoveryConfig.seconds, show_default=True,
                 help="with data: wall-clock bound of the distillation from the dense model after pruning (stops "
                      "early once calibration accuracy reaches the dense model's or stops improving)"),
    click.option("--no-recover", is_flag=True, help="BatchNorm re-calibration only, no distillation"),
    click.option("--finetune-steps", type=count(0), default=None,
                 help="a fixed number of distillation steps instead of --recover-seconds (no early stop)"))


def recovery_config(recover_seconds: float, no_recover: bool, finetune_steps: int | None) -> RecoveryConfig:
    """The `RecoveryConfig` of `recovery_options`; --no-recover with --finetune-steps is refused."""
    if no_recover and finetune_steps:
        raise ToolchainError("--no-recover and --finetune-steps contradict each other; give one")
    return RecoveryConfig(finetune_steps=finetune_steps, seconds=recover_seconds, distill=not no_recover)


budget_statistic_option = click.option(
    "--budget-statistic", type=click.Choice(BUDGET_STATISTICS), default=None,
    help="the statistic of the timed runs the budget is met on (default: the measurement's statistic, min, or "
         "prune's --statistic; min: other work on a shared machine only adds time, so the fastest run repeats "
         "best; median/p90: the typical/slow run on this machine)")
shapley_samples_option = group(
    click.option("--shapley-samples", type=count(1), default=SaliencyConfig.shapley_samples, show_default=True,
                 help="--criterion shapley: permutations per round (it samples rounds until each group's ranking "
                      "is stable, or --shapley-seconds runs out)"),
    click.option("--shapley-seconds", type=finite_float(min=0.0), default=SaliencyConfig.shapley_seconds,
                 show_default=True, help="--criterion shapley: time limit over all groups (each gets one round)"))


def saliency_config(shapley_samples: int, shapley_seconds: float):
    """The `SaliencyConfig` of `shapley_samples_option`."""
    return SaliencyConfig(shapley_samples=shapley_samples, shapley_seconds=shapley_seconds)


correct_predictor_option = click.option(
    "--correct-predictor/--no-correct-predictor", default=BudgetConfig.correct_predictor, show_default=True,
    help="after each measured try, correct the latency predictor by the tries so far and allocate again "
         "(instead of refining the first allocation locally)")


def select_after_recovery_option(default: int = BudgetConfig.recovered_selection_steps):
    """`--select-after-recovery STEPS`; a sweep defaults to 0 so that its methods are the plain allocators."""
    return click.option(
        "--select-after-recovery", "select_after_recovery", type=click.IntRange(min=0), metavar="STEPS",
        default=default, show_default=True,
        help="with data: also search the uniform allocation's widths under the same measured budget and keep the "
             "model whose calibration loss after STEPS distillation steps is lower (0: the allocator's model)")


budget_options = group(
    click.option("--budget-ms", type=POSITIVE_MS, help="latency budget in ms on the target (replaces --ratio)"),
    click.option("--budget-ratio", type=SHARE, help="budget as a share of the dense model's measured latency"),
    click.option("--criterion", type=CRITERIA, default=DEFAULT_CRITERION, show_default=True,
                 help="saliency criterion (with a budget); auto: taylor with data, l2 (data-free) without"),
    click.option("--allocator", type=ALLOCATORS, default=BudgetConfig.allocator, show_default=True,
                 help="width allocator (with a budget)"),
    correct_predictor_option, select_after_recovery_option(), budget_statistic_option, predictor_option,
    profile_samples_option, shapley_samples_option)


# --- output ----------------------------------------------------------------------------------------------------

def out_option(required: bool = True, help: str | None = None, default: Path | None = None,
               file: bool = False) -> Decorator:
    """`--out`: a folder written atomically (or, with `file`, one file)."""
    kind = click.Path(dir_okay=False, path_type=Path) if file else click.Path(file_okay=False, path_type=Path)
    return click.option("--out", type=kind, required=required, default=default, show_default=default is not None,
                        help=help)


json_option = click.option("--json", "as_json", is_flag=True,
                           help="print the result as JSON on stdout (progress stays on stderr)")
quiet_option = click.option("--quiet", is_flag=True, help="no step messages or progress bars on stderr")
