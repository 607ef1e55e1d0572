"""Every numeric option is range-checked at parse time: a bad value is exactly one `error:` line and exit code 2,
before any model is built (the commands below would need minutes of work if parsing let the value through)."""

from __future__ import annotations

import contextlib
import io
import math

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolchain.cli import cli, main
from toolchain.commands.validation import FiniteFloat

NOT_NUMBERS = st.sampled_from(["abc", "", "1e", "0x10", "--", "1,5"])
NOT_FINITE = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity"])


def ints_outside(low: int | None = None, high: int | None = None):
    """Text of integers below `low` or above `high`, non-integers and non-numbers."""
    outside = []
    if low is not None:
        outside.append(st.integers(max_value=low - 1))
    if high is not None:
        outside.append(st.integers(min_value=high + 1))
    return st.one_of(*[s.map(str) for s in outside], NOT_NUMBERS, NOT_FINITE, st.just("2.5"))


def floats_outside(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False):
    """Text of finite floats outside [low, high] (the bound itself where the range is open), NaN/inf, non-numbers."""
    numbers = []
    if low is not None:
        numbers.append(st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, allow_infinity=False))
    if high is not None:
        numbers.append(st.floats(min_value=high, exclude_min=not high_open, allow_nan=False, allow_infinity=False))
    return st.one_of(*[n.map(str) for n in numbers], NOT_NUMBERS, NOT_FINITE)


BAD_SHAPES = st.one_of(st.sampled_from(["1,3,x", "1,a", "1,,3", "1,3,", "", "0,3,8,8", "-1,3", "1.5,3",
                                         "99999,99999,9999"]),
                       st.text(alphabet=",x ab-.", max_size=6))

OUT = "/nonexistent-toolchain-test/out"  # never written: parsing fails first
BASE_ARGS = {
    "prune": ["prune", "--model", "zoo:demo", "--out", OUT],
    "deploy": ["deploy", "--model", "zoo:demo", "--out", OUT],
    "export": ["export", "--model", "zoo:demo", "--out", OUT + ".onnx"],
    "profile": ["profile", "--model", "zoo:demo", "--db", OUT + ".db"],
    "fit": ["fit", "--predictor", "macs", "--out", OUT, "--db", OUT + ".db"],
    "predict": ["predict", "--predictor", ".", "--model", "zoo:demo"],
    "sparsify": ["sparsify", "--pattern", "2:4", "--model", "zoo:demo"],
    "sweep": ["sweep", "--model", "zoo:demo", "--out", OUT],
}
# (command, option) -> text values it must refuse.
BAD_VALUES = {
    **{(command, "--input-shape"): BAD_SHAPES for command in ("prune", "deploy", "export", "profile", "predict",
                                                                "sparsify", "sweep")},
    **{(command, "--ratio"): floats_outside(0.0, 1.0, high_open=True) for command in ("prune", "deploy")},
    **{(command, "--round-to"): ints_outside(1, 1024) for command in ("prune", "deploy")},
    **{(command, "--budget-ms"): floats_outside(0.0, None, low_open=True) for command in ("prune", "deploy")},
    **{(command, "--budget-ratio"): floats_outside(0.0, 1.0, low_open=True) for command in ("prune", "deploy")},
    **{(command, "--finetune-steps"): ints_outside(0) for command in ("prune", "deploy", "sweep")},
    **{(command, "--select-after-recovery"): ints_outside(0) for command in ("prune", "deploy", "sweep")},
    **{(command, "--recover-seconds"): floats_outside(0.0, None) for command in ("prune", "deploy")},
    **{(command, "--threads"): ints_outside(1, 1024) for command in ("prune", "profile", "fit", "predict", "sweep")},
    **{(command, "--profile-samples"): ints_outside(10) for command in ("prune", "deploy", "sweep")},
    **{(command, "--shapley-samples"): ints_outside(1) for command in ("prune", "deploy", "sweep")},
    **{(command, "--shapley-seconds"): floats_outside(0.0, None) for command in ("prune", "deploy", "sweep")},
    ("export", "--opset"): ints_outside(17),
    ("profile", "--samples"): ints_outside(1),
    ("profile", "--seed"): ints_outside(0, 2**32 - 1),
    ("profile", "--min-ratio"): floats_outside(0.0, 1.0, low_open=True),
    ("profile", "--layer-levels"): ints_outside(0, 64),
    ("profile", "--noise-configs"): ints_outside(0),
    ("profile", "--warmup"): ints_outside(0),
    ("profile", "--runs"): ints_outside(1),
    ("profile", "--min-timed-ms"): floats_outside(0.0, None),
    ("profile", "--build-workers"): ints_outside(1),
    ("profile", "--spread-configs"): ints_outside(0),
    ("fit", "--heldout-fraction"): floats_outside(0.0, 1.0, low_open=True, high_open=True),
    ("fit", "--max-train"): ints_outside(0),
    ("sparsify", "--sparsity"): floats_outside(0.0, 1.0, high_open=True),
    ("sweep", "--workers"): ints_outside(1),
}


def run_main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(args: list[str], option: str) -> None:
    code, stdout, stderr = run_main(args)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, code, stderr)
    assert option in lines[0] or "shape" in lines[0], lines[0]
    assert stdout == ""


@pytest.mark.parametrize("command, option", sorted(BAD_VALUES))
def test_random_bad_values_of_every_numeric_option_are_one_error_line(command, option):
    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
              derandomize=True)  # the same examples on every run: a failure is reproducible
    @given(value=BAD_VALUES[(command, option)])
    def check(value):
        assert_one_error_line([*BASE_ARGS[command], option, value], option)

    check()


def _numeric_options() -> set[tuple[str, str]]:
    """(command, option) of every option whose value is a number or a shape, read from the CLI itself."""
    found = set()
    for name, command in cli.commands.items():
        for param in getattr(command, "params", []):
            numeric = isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))
            if isinstance(param, click.Option) and not param.is_flag and (numeric or "--input-shape" in param.opts):
                found.add((name, param.opts[0]))
    return found


def test_every_numeric_option_of_the_cli_is_covered_and_bounded():
    assert _numeric_options() == set(BAD_VALUES)
    for name, command in cli.commands.items():
        for param in getattr(command, "params", []):
            if isinstance(param.type, click.types.FloatParamType):
                assert isinstance(param.type, FiniteFloat), f"{name} {param.opts[0]} takes any float (nan?)"
            if isinstance(param.type, click.types.IntParamType) and not isinstance(param.type, click.IntRange):
                pytest.fail(f"{name} {param.opts[0]} takes any integer")


@pytest.mark.parametrize("command, option, value", [
    ("prune", "--input-shape", "1,3,x"),
    ("prune", "--round-to", "100000"),
    ("prune", "--budget-ms", "inf"),
    ("prune", "--budget-ms", "nan"),
    ("profile", "--samples", "0"),
    ("profile", "--samples", "-5"),
    ("profile", "--warmup", "-1"),
    ("profile", "--min-timed-ms", "nan"),
    ("profile", "--layer-levels", "-3"),
    ("profile", "--noise-configs", "-1"),
    ("profile", "--min-ratio", "1.5"),
    ("profile", "--min-ratio", "nan"),
    ("profile", "--runs", "0"),
])
def test_the_values_the_issue_found_are_refused(command, option, value):
    assert_one_error_line([*BASE_ARGS[command], option, value], option)


def test_the_shape_limit_is_finite():
    from toolchain.shapes import MAX_INPUT_ELEMENTS

    assert math.isfinite(MAX_INPUT_ELEMENTS)


def test_the_shapley_options_reach_the_saliency_config():
    from toolchain.commands.options import saliency_config
    from toolchain.saliency import SaliencyConfig

    assert saliency_config(6, 12.5) == SaliencyConfig(shapley_samples=6, shapley_seconds=12.5)
    code, _, err = run_main(["prune", "--model", "zoo:demo", "--out", OUT, "--shapley-seconds", "-1"])
    assert code != 0 and "--shapley-seconds" in err
