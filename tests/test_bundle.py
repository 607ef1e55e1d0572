"""Deploy bundles: host and Jetson contents, honest manifests, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from toolchain import defaults
from toolchain.bundle import BundleConfig, default_out, roofline_prior_ms, write_bundle
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.manifest import Manifest
from toolchain.pipeline import PipelineConfig
from toolchain.pruning import PruneConfig
from toolchain.recover import RecoveryConfig
from toolchain.targets.devices import get_device

pytestmark = pytest.mark.tvm


def _cross_tools_available() -> bool:
    if shutil.which("aarch64-linux-gnu-g++"):
        return True
    return subprocess.run(["make", "-s", "cross-tools"], capture_output=True).returncode == 0


def test_jetson_bundle_holds_cross_built_library_engine_scripts_and_honest_manifest(tmp_path):
    if not _cross_tools_available():
        pytest.skip("the aarch64 cross compiler could not be installed through apt")
    out = tmp_path / "jetson"
    manifest = write_bundle(BundleConfig(device="jetson"),
                            PipelineConfig(model="zoo:demo", out=out, prune=PruneConfig(ratio=0.5),
                                           recovery=RecoveryConfig(distill=False)))
    files = {p.name for p in out.iterdir()}
    assert {"model.onnx", "arch.json", "weights.safetensors", "manifest.json", "README.md", "build_engine.sh",
            "run.py", "calib.cache", "model.jetson-orin.so"} <= files
    assert manifest["tvm"]["elf_machine"] == "aarch64" and manifest["tvm"]["cuda_archs"] == ["sm_87"]
    assert manifest["device"]["name"] == "jetson-orin" and manifest["device"]["cuda_sm"] == "sm_87"
    latency = manifest["latency"]
    assert latency["measured_ms"] is None and "not measured" in latency["measured_note"]
    assert latency["predicted_ms"] > 0 and "roofline prior" in latency["prediction_source"]
    assert latency["prediction_source"].startswith("predicted by") and "statistic" not in latency
    assert manifest["tensorrt"]["calibration_cache"] == "calib.cache"
    assert manifest["versions"]["torch"].startswith("2.")
    assert json.loads((out / "manifest.json").read_text()) == manifest
    readme = (out / "README.md").read_text()
    assert "NOT measured" in readme and "build_engine.sh" in readme
    assert (out / "build_engine.sh").stat().st_mode & 0o111


def test_host_bundle_has_a_tvm_library_checked_against_pytorch(tmp_path):
    out = tmp_path / "cpu"
    manifest = write_bundle(BundleConfig(device="cpu"),
                            PipelineConfig(model="zoo:resnet56_cifar", out=out, data="none",
                                           prune=PruneConfig(ratio=0.3)))
    assert (out / manifest["tvm"]["library"]).is_file()
    assert manifest["tvm"]["max_rel_err"] <= 1e-4
    assert "tensorrt" not in manifest and not (out / "build_engine.sh").exists()
    # on the host the latency is measured, never predicted, and says how
    assert manifest["latency"]["measured_ms"] > 0 and "cpu/onnxruntime/1t" in manifest["latency"]["source"]
    assert manifest["latency_fingerprint"]["threads"] == 1
    # the measurement policy's statistic, recorded beside the value (the budget loop's key, the same meaning)
    assert manifest["latency"]["statistic"] == defaults.STATISTIC and manifest["latency"]["clock"] == "thread_cpu"
    assert manifest["measured_latency_ms"] == manifest["latency"]["measured_ms"]
    assert f"{defaults.STATISTIC} of " in manifest["latency"]["source"]
    runs = manifest["latency_runs"]["measured"]  # the other statistics of the same timed runs
    assert runs["min_ms"] <= runs["median_ms"] <= runs["p90_ms"] and runs["runs"] >= defaults.TIMED_RUNS
    assert Manifest.from_json(manifest).to_json() == manifest


def test_unknown_target_lists_the_valid_ones(tmp_path, capsys):
    code = main(["deploy", "--model", "zoo:demo", "--target", "jetson-nano", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: unknown device 'jetson-nano'; valid: cpu")
    assert "jetson-orin" in err and not (tmp_path / "x").exists()


def test_int8_without_calibration_data_is_refused(tmp_path):
    if not _cross_tools_available():
        pytest.skip("the aarch64 cross compiler could not be installed through apt")
    with pytest.raises(ToolchainError, match="int8 engine needs calibration data"):
        write_bundle(BundleConfig(device="jetson", precision="int8"),
                     PipelineConfig(model="zoo:resnet56_cifar", out=tmp_path / "b", data="none"))
    assert not (tmp_path / "b").exists()


def test_default_out_and_roofline_prior():
    assert str(default_out("jetson", "zoo:demo")) == "dist/jetson-orin/demo"
    assert str(default_out("cpu", "nets/my.py:build")) == "dist/cpu/my-build"
    orin = get_device("jetson-orin")
    compute_bound = roofline_prior_ms(orin, macs=10**12, params=1, precision="fp16")
    assert compute_bound == pytest.approx(1000 * 2e12 / orin.peak_flops("fp16"))
    assert roofline_prior_ms(get_device("cpu"), macs=10**9, params=10**6, precision="fp16") is None


def test_deploy_measures_on_the_board_through_tvm_rpc(tmp_path):
    """A TVM RPC server on 127.0.0.1 stands in for the board."""
    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
    from toolchain.latency.rpc import loopback_cluster

    out = tmp_path / "board"
    with loopback_cluster(key="stand-in-board", tracker_port=9490) as cluster:
        manifest = write_bundle(BundleConfig(device="cpu", rpc=cluster.endpoint),
                                PipelineConfig(model="zoo:demo", out=out, data="none", prune=PruneConfig(ratio=0.5)))
    latency = manifest["latency"]
    assert latency["measured_ms"] > 0
    assert "'stand-in-board' through TVM RPC" in latency["source"]
    assert manifest["latency_fingerprint"]["device"] == "rpc:stand-in-board"


def test_unreachable_board_still_gives_a_bundle_that_says_latency_is_not_measured(tmp_path):
    from toolchain.targets import RpcEndpoint

    out = tmp_path / "b"
    manifest = write_bundle(BundleConfig(device="cpu", rpc=RpcEndpoint("127.0.0.1", 9, "gone")),
                            PipelineConfig(model="zoo:resnet56_cifar", out=out, data="none"))
    assert manifest["latency"]["measured_ms"] is not None  # measured on the host instead, and labelled so
    assert "measured on this host" in manifest["latency"]["source"]
    assert "gone" in manifest["latency_unreachable"]


def test_a_budget_for_a_board_without_a_budget_loop_is_refused_clearly(tmp_path, capsys):
    code = main(["deploy", "--model", "zoo:demo", "--target", "jetson", "--budget-ratio", "0.5",
                 "--out", str(tmp_path / "j")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: a latency budget is met by measuring on the target")
    assert "--rpc-tracker" in err
    assert not (tmp_path / "j").exists()


def test_budget_deploy_profiles_fits_prunes_and_measures_on_the_board_through_rpc(tmp_path):
    """The closed loop against a TVM RPC server on 127.0.0.1 standing in for the board."""
    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
    from toolchain.allocate import BudgetConfig
    from toolchain.budget import BudgetJob
    from toolchain.latency.rpc import loopback_cluster
    from toolchain.latency.store import MeasurementStore
    from toolchain.targets import Target

    db = tmp_path / "runs" / "latency.db"
    with loopback_cluster(key="board", tracker_port=9590) as cluster:
        spec = Target("cpu", rpc=cluster.endpoint, profile_samples=12, warmup_runs=1, timed_runs=5)
        job = BudgetJob(BudgetConfig(budget_ratio=0.7, criterion="l2", allocator="uniform", max_iterations=2,
                                     finetune_steps=0),
                        spec, predictor=str(tmp_path / "predictor"), db_path=str(db))
        manifest = write_bundle(BundleConfig(device="cpu", rpc=cluster.endpoint),
                                PipelineConfig(model="zoo:demo", out=tmp_path / "b", budget=job))
    board_db = tmp_path / "runs" / "latency-rpc-board.db"
    assert board_db.is_file() and not db.exists(), "the board's rows live in their own database"
    with MeasurementStore(str(board_db)) as store:
        rows = store.rows()
    assert len(rows) >= 12 and all(r.fingerprint["device"] == "rpc:board" for r in rows)
    assert manifest["latency_target"]["label"].endswith("@rpc-board")
    assert 0 < manifest["measured_latency_ms"] <= manifest["budget_ms"] < manifest["dense_latency_ms"]
    assert "budget loop on cpu/tvm/1t@rpc-board" in manifest["latency"]["source"]
