"""The CLI is its command modules: each registered explicitly, options defined once with the library's defaults,
names checked at parse time against the registries (one `error:` line, exit code 2, nothing built or written)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import toolchain
import toolchain.commands
from toolchain import defaults
from toolchain.cli import cli, main
from toolchain.errors import ToolchainError

COMMANDS = {"deploy", "export", "fit", "predict", "profile", "prune", "report", "sparsify", "sweep", "targets", "zoo"}


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"], prog_name="toolchain")
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out.split("Commands:")[1].split()
    assert COMMANDS <= set(listed) and set(cli.commands) == COMMANDS


def test_every_command_module_is_registered():
    """A command defined in toolchain/commands/ but missing from cli.py fails here (nothing is skipped silently)."""
    registered = {id(command) for command in cli.commands.values()}
    registered |= {id(sub) for group in cli.commands.values() if isinstance(group, click.Group)
                   for sub in group.commands.values()}
    for module_info in pkgutil.iter_modules(toolchain.commands.__path__):
        module = importlib.import_module(f"toolchain.commands.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, click.Command) and value.callback.__module__ == module.__name__:
                assert id(value) in registered, f"{module.__name__}.{value.name} is not registered in cli.py"


def test_no_module_imports_the_cli():
    """Shared CLI helpers live in toolchain.commands; only the entry points import toolchain.cli."""
    root = Path(toolchain.__file__).parent
    for path in root.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py") and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "toolchain.cli" and not (node.module == "toolchain" and any(
                    alias.name == "cli" for alias in node.names)), path
            elif isinstance(node, ast.Import):
                assert all(alias.name != "toolchain.cli" for alias in node.names), path



def test_the_cli_does_not_import_what_only_some_runs_need():
    """Every CLI call pays for its imports: scipy (0.9 s) is imported by the functions that fit or sample, and
    transformers (0.3 s) only by a model that holds its layers."""
    probe = "import sys, toolchain.cli; print(sorted(m for m in ('scipy', 'transformers') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

# Parameter name -> the measurement policy's default it must have (None: a command that only filters by it).
POLICY = {"target": defaults.TARGET, "backend": defaults.BACKEND, "threads": defaults.THREADS,
          "clock": defaults.CLOCK, "statistic": defaults.STATISTIC, "warmup": defaults.WARMUP_RUNS,
          "runs": defaults.TIMED_RUNS, "min_timed_ms": defaults.MIN_TIMED_MS,
          "profile_samples": defaults.PROFILE_SAMPLES, "opset": defaults.ONNX_OPSET}


@pytest.mark.parametrize("command", sorted(COMMANDS - {"zoo"}))
def test_every_measuring_option_has_the_policys_default(command):
    for param in cli.commands[command].params:
        if isinstance(param, click.Option) and param.name in POLICY:
            assert param.default in (POLICY[param.name], None), f"{command} --{param.name}: {param.default!r}"


def run_main(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


@pytest.mark.parametrize("args, message", [
    (["deploy", "--criterion", "magic"], "unknown criterion 'magic'; valid: "),
    (["deploy", "--allocator", "greedy"], "unknown allocator 'greedy'; valid: knapsack, lpnet"),
    (["prune", "--criterion", "magic"], "unknown criterion 'magic'; valid: "),
    (["prune", "--target", "npu"], "unknown target 'npu'; valid targets/backends: cpu: onnxruntime"),
    (["prune", "--backend", "coreml"], "unknown backend 'coreml' for target 'cpu'; valid: onnxruntime, torch, tvm"),
    (["sweep", "--criteria", "l1,,magic"], "unknown criterion 'magic'"),
    (["sweep", "--target", "cuda", "--backend", "onnxruntime"], "unknown backend 'onnxruntime' for target 'cuda'"),
    (["deploy", "--target", "jetson-nano"], "unknown device 'jetson-nano'; valid: cpu"),
    (["deploy", "--precision", "fp8"], "'fp8' is not one of 'fp16', 'int8'"),
])
def test_a_bad_name_is_one_error_line_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, err = run_main([*args[:1], "--model", "zoo:demo", "--out", str(out), *args[1:]], capsys)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_an_unknown_predictor_name_is_refused_before_fitting(tmp_path):
    result = CliRunner().invoke(cli, ["fit", "--predictor", "xgb", "--db", str(tmp_path / "m.db"), "--out",
                                      str(tmp_path / "p")])
    assert isinstance(result.exception, ToolchainError)
    assert "unknown predictor 'xgb'; valid: layerwise, lpnet, lut, macs" in str(result.exception)


def test_an_alias_of_the_device_table_is_a_valid_target():
    deploy = cli.commands["deploy"]
    target = next(param for param in deploy.params if param.name == "target")
    assert target.type.convert("jetson", target, None) == "jetson"


def test_quiet_prints_the_result_without_the_steps(tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", "zoo:demo", "--data", "none", "--out", str(out)]) == 0
    steps = capsys.readouterr().err
    assert "… pruning" in steps
    assert main(["prune", "--model", "zoo:demo", "--data", "none", "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "…" not in captured.err and captured.out.startswith(f"wrote {tmp_path / 'quiet'}/")


def test_sweep_passes_the_selection_after_recovery_to_every_point(monkeypatch, tmp_path):
    import toolchain.sweep

    seen = {}

    def run_sweep(config, _steps):
        seen["config"] = config
        return []

    monkeypatch.setattr(toolchain.sweep, "run_sweep", run_sweep)
    result = CliRunner().invoke(cli, ["sweep", "--model", "zoo:demo", "--out", str(tmp_path / "s"),
                                      "--select-after-recovery", "12", "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen["config"].recovered_selection_steps == 12
