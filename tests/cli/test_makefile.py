"""`make deploy` and `make profile` run the CLI with the CLI's own defaults: make passes an option only when its
variable is set (the latency budget of `make deploy` is make's one choice of its own)."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from toolchain import defaults

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def toolchain_args(target: str, *variables: str) -> list[str]:
    """The arguments `make -n` would give the toolchain command (install steps and line breaks dropped)."""
    dry_run = subprocess.run(["make", "-n", "-s", target, *variables], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.replace("\\\n", " ")
    line = next(line for line in dry_run.splitlines() if "/toolchain " in line)
    return shlex.split(line.split("/toolchain ", 1)[1])


def test_make_deploy_passes_the_clis_target_and_only_the_budget_of_its_own():
    args = toolchain_args("deploy")
    assert args == ["deploy", "--model", "zoo:demo", "--target", defaults.TARGET, "--budget-ratio", "0.5"]


def test_make_deploy_passes_what_the_user_sets():
    args = toolchain_args("deploy", "PRECISION=int8", "BUDGET_MS=3", "OUT=dist/x")
    assert args == ["deploy", "--model", "zoo:demo", "--target", defaults.TARGET, "--precision", "int8",
                    "--budget-ms", "3", "--out", "dist/x"]


def test_make_deploy_without_a_reachable_board_leaves_the_ratio_to_the_cli():
    assert "--ratio" not in toolchain_args("deploy", "TARGET=jetson-orin", "CROSS_CXX=true")
    assert toolchain_args("deploy", "TARGET=jetson-orin", "CROSS_CXX=true", "RATIO=0.3")[-2:] == ["--ratio", "0.3"]


def test_make_profile_leaves_samples_and_database_to_the_cli():
    assert toolchain_args("profile") == ["profile", "--model", "zoo:demo", "--device", defaults.TARGET]
    assert toolchain_args("profile", "SAMPLES=50")[-2:] == ["--samples", "50"]
