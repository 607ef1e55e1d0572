"""The board's `run.py` (toolchain/export/board_run.py) as code: its arguments, its result, its error without an
engine, and that it runs as a single file with nothing of toolchain beside it. Timing itself needs TensorRT and a
GPU (tests/export/test_tensorrt.py::test_local_build_times_an_engine)."""

import subprocess
import sys
import types

import pytest

from toolchain.export import board_run
from toolchain.export.tensorrt import BOARD_RUN_PY, run_script


def test_defaults_are_the_bundles_engine_and_the_documented_run_counts():
    args = board_run.parse_args([])
    assert (args.engine, args.warmup, args.repeats, args.json) == ("model.engine", 20, 200, False)


@pytest.mark.parametrize("argv", [["my.engine"], ["--engine", "my.engine"], ["my.engine", "--engine", "my.engine"]])
def test_the_engine_is_positional_as_the_bundle_readme_says_or_an_option(argv):
    assert board_run.parse_args(argv).engine == "my.engine"


@pytest.mark.parametrize("argv", [["a.engine", "--engine", "b.engine"], ["--repeats", "0"], ["--warmup", "-1"],
                                  ["--repeats", "many"]])
def test_contradictory_or_out_of_range_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        board_run.parse_args(argv)
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err


def test_the_result_holds_the_statistics_of_the_timed_runs():
    result = board_run.summarize("model.engine", "10.3.0", [3.0, 1.0, 2.0, 10.0])
    assert (result["median_ms"], result["min_ms"], result["max_ms"]) == (2.5, 1.0, 10.0)
    assert result["timer"] == "cuda-events" and result["measured_ms"] == [3.0, 1.0, 2.0, 10.0]
    assert board_run.describe(result) == ("model.engine: median 2.500 ms over 4 runs (min 1.000, max 10.000; "
                                          "TensorRT 10.3.0, CUDA events)")


def test_an_engine_tensorrt_cannot_load_is_one_error_line(tmp_path, monkeypatch):
    """A stand-in `tensorrt` whose runtime refuses the engine (built on another GPU or release)."""
    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            return None

    fake = types.SimpleNamespace(__version__="10.3.0", Logger=Logger, Runtime=Runtime)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(SystemExit, match=r"^error: cannot load .*model.engine; rebuild it on this device"):
        board_run.main([str(engine)])


def test_the_bundle_carries_this_file_and_it_runs_alone(tmp_path):
    assert run_script() == BOARD_RUN_PY.read_text()
    (tmp_path / "run.py").write_text(run_script())
    # -I: no PYTHONPATH, no script folder on the path: only the standard library and site-packages (numpy).
    help_text = subprocess.run([sys.executable, "-I", "run.py", "--help"], cwd=tmp_path, capture_output=True,
                               text=True, check=True).stdout
    assert "CUDA events" in help_text and "--repeats" in help_text
