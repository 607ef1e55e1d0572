"""Deploy bundles for a device: the TVM library, TensorRT engine scripts, calibration, manifest.

`dist/<device>/<model>/` holds everything the person at the board needs:

    model.onnx  arch.json  weights.safetensors  manifest.json  README.md
    model.<device>.so                 TVM library (cross-built: aarch64 host code + CUDA sm_87)
    build_engine.sh  run.py           TensorRT engine build (trtexec) and timing on the device
    calib.cache                       INT8 calibration cache (when calibration data is given)

>>> write_bundle(BundleConfig(device="jetson"), PipelineConfig(model="zoo:demo", out=Path("dist/x")))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import shutil
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from toolchain import defaults
from toolchain.data import resolve_data
from toolchain.errors import ToolchainError
from toolchain.manifest import Accuracy, Deployment, Latencies, Latency, Manifest
from toolchain.pipeline import PipelineConfig, Step, write_pruned_folder
from toolchain.targets import RpcEndpoint
from toolchain.targets.devices import DeviceProfile, get_device

ENGINE_PRECISIONS = ("fp16", "int8")


@dataclass(frozen=True)
class BundleConfig:
    """Which device the bundle is for and how its TensorRT engine is built there."""

    device: str = defaults.TARGET
    precision: str = "fp16"  # the engine precision build_engine.sh asks for: fp16 or int8
    calib_batches: int = 8  # calibration batches used for the INT8 cache
    rpc: RpcEndpoint | None = None  # the board, reached through a TVM RPC tracker, to measure on
    statistic: str = defaults.STATISTIC  # of the timed runs when the bundle step measures (a ratio prune)


def default_out(device: str, model_spec: str) -> Path:
    """`dist/<device>/<model name>`: `zoo:demo` -> demo, `nets/my.py:build` -> my-build."""
    if model_spec.startswith("zoo:"):
        name = model_spec[4:]
    else:
        path, _, factory = model_spec.rpartition(":")
        name = f"{Path(path).stem}-{factory}"
    return Path("dist") / get_device(device).name / name


def library_versions() -> dict[str, str | None]:
    versions = {}
    for package in ("toolchain", "torch", "torch-pruning", "onnx", "onnxruntime", "apache-tvm", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def roofline_prior_ms(device: DeviceProfile, macs: int, params: int, precision: str) -> float | None:
    """An uncalibrated lower bound: the larger of compute time at peak and weight traffic at full bandwidth."""
    table_precision = "fp16" if precision == "fp16" else "int8"
    peak = device.peak_flops(table_precision)
    if peak is None or not device.memory_bandwidth_gb_per_s:
        return None
    bytes_per_weight = 2 if table_precision == "fp16" else 1
    compute_s = 2.0 * macs / peak
    memory_s = params * bytes_per_weight / (device.memory_bandwidth_gb_per_s * 1e9)
    return 1000.0 * max(compute_s, memory_s)


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _measure_on_host(model: torch.nn.Module, example_input: torch.Tensor, latency: Latencies,
                     statistic: str) -> Latencies:
    """Time the pruned model on this machine with the measurement harness (not a prediction)."""
    from toolchain.budget_timing import runs_of
    from toolchain.latency.fingerprint import machine_fingerprint
    from toolchain.latency.measure import measure
    from toolchain.targets import Target

    measured_on = Target(defaults.TARGET, statistic=statistic)  # the measurement policy, with the run's statistic
    target, config = measured_on.resolve(), measured_on.measure_config()
    result = measure(target.prepare(model, example_input), config)
    how = f": {statistic} of {len(result.samples_ms)} runs after {config.warmup_runs} warm-up runs, IQR " \
          f"{result.iqr_ms:.3f} ms"
    return replace(latency, measured=Latency.measured_on(f"this host, {target.label}", result.value(statistic),
                                                         statistic, config.clock, how, runs_of(result)),
                   fingerprint=machine_fingerprint(target))


def _measure_through_rpc(model: torch.nn.Module, example_input: torch.Tensor, latency: Latencies,
                         device: DeviceProfile, endpoint: RpcEndpoint, statistic: str) -> Latencies:
    """Compile on this host for the board's CPU, upload, and time with TVM's evaluator on the board."""
    from toolchain.latency.fingerprint import machine_fingerprint
    from toolchain.latency.measure import measure
    from toolchain.latency.rpc import DeviceLostError, tracker_unreachable_reason, with_retries
    from toolchain.targets import Target
    from toolchain.targets.devices import rpc_target_json

    endpoint = replace(endpoint, tvm_target_json=endpoint.tvm_target_json or rpc_target_json(device))
    measured_on = Target(defaults.TARGET, "tvm", rpc=endpoint, statistic=statistic)
    target, config = measured_on.resolve(), measured_on.measure_config()
    unreachable = tracker_unreachable_reason(endpoint)
    if unreachable is not None:
        return replace(latency, unreachable=f"device {endpoint.key!r}: {unreachable}")
    try:
        result = with_retries(lambda: measure(target.prepare(model, example_input), config), endpoint,
                              what="timing the deployed model")
    except DeviceLostError as exc:  # the bundle is still written; its latency stays a labelled prediction
        return replace(latency, unreachable=str(exc))
    board = (f"device {endpoint.key!r} through TVM RPC (tracker {endpoint.tracker_host}:{endpoint.tracker_port}), "
             f"TVM target {endpoint.tvm_target_json or 'llvm'} (CPU path)")
    how = f": {statistic} of {len(result.samples_ms)} runs of TVM's time evaluator, IQR {result.iqr_ms:.3f} ms"
    return replace(latency, measured=Latency.measured_on(board, result.value(statistic), statistic, config.clock, how),
                   fingerprint=machine_fingerprint(target))


class _TargetArtifacts:
    """The `extend` step of the deploy pipeline for one device."""

    def __init__(self, device: DeviceProfile, config: BundleConfig):
        self.device, self.config = device, config

    def __call__(self, folder: Path, model: torch.nn.Module, example_input: torch.Tensor, data, manifest: dict,
                 step: Step) -> None:
        from toolchain.export import tvm as tvm_export

        typed = Manifest.from_json(manifest)
        onnx_path, device, latency = folder / "model.onnx", self.device, typed.latency
        tensorrt = self._check_tensorrt(onnx_path) if device.tensorrt_on_device else None
        if self.config.rpc is not None and latency.measured is None:  # else the budget loop measured there
            step(f"measuring latency on the board {self.config.rpc.key!r} through TVM RPC")
            latency = _measure_through_rpc(model, example_input, latency, device, self.config.rpc,
                                           self.config.statistic)
        if device.cross_compiler is None and not device.has_gpu:
            if latency.measured is None:  # the budget loop measures; a ratio prune is measured here
                step("measuring latency on this host (cpu/onnxruntime, 1 thread)")
                latency = _measure_on_host(model, example_input, latency, self.config.statistic)
            step("compiling the TVM library for this host and checking it against PyTorch")
            lib = tvm_export.compile_onnx_for_host(onnx_path, folder)
            tvm = {"library": lib.name, "target": "llvm (this host)",
                   "max_rel_err": tvm_export.verify_tvm_against(model, lib, example_input)}
        else:
            step(f"cross-compiling the TVM library for {device.name} ({device.cpu_triple}, {device.cuda_sm})")
            lib = tvm_export.cross_compile(onnx_path, device, folder)
            info = tvm_export.inspect_library(lib)
            tvm = {"library": lib.name, "elf_machine": info["elf_machine"], "cuda_archs": info["cuda_archs"],
                   "cuda_source_only": info["cuda_source_only"]}
        if tensorrt is not None:
            tensorrt = self._engine_files(folder, onnx_path, data, tensorrt, typed.accuracy, step)
        typed = replace(typed, latency=self._unmeasured(typed, latency) if latency.measured is None else latency,
                        deployment=Deployment(device={"name": device.name, "description": device.description,
                                                      "cpu_triple": device.cpu_triple, "cuda_sm": device.cuda_sm,
                                                      "source": device.source},
                                              versions=library_versions(), tvm=tvm, tensorrt=tensorrt))
        manifest.clear()  # the pipeline's manifest, extended: it is written as this typed manifest says
        manifest.update(typed.to_json())
        (folder / "README.md").write_text(board_readme(typed))

    def _check_tensorrt(self, onnx_path: Path) -> dict:
        from toolchain.export.tensorrt_ops import check_tensorrt_ops

        version = self.device.tensorrt_version
        found = check_tensorrt_ops(onnx_path, self.config.precision, version)
        blocking = [op for op in found if op.blocking]
        if blocking:
            listed = "; ".join(str(op) for op in blocking[:5])
            raise ToolchainError(f"TensorRT {version} on {self.device.name} cannot build this ONNX: {listed}")
        return {"version_on_device": version, "precision": self.config.precision,
                "fallback_ops": [str(op) for op in found]}

    def _engine_files(self, folder: Path, onnx_path: Path, data, tensorrt: dict, accuracy: Accuracy | None,
                      step: Step) -> dict:
        """Write the engine build script, run.py and the INT8 calibration cache; return the TensorRT section."""
        from toolchain.export.tensorrt import (
            engine_build_script,
            has_2_4_sparse_weights,
            run_script,
            write_calibration_cache,
        )

        cache_name = None
        if data is not None:
            step("writing the INT8 calibration cache from calibration data")
            batches = [x.numpy() for x, _ in data.loader("calib", batch_size=1)][: self.config.calib_batches]
            write_calibration_cache(onnx_path, batches, folder / "calib.cache", self.device.tensorrt_version)
            cache_name = "calib.cache"
            calibration = (f"calib.cache from {len(batches)} calibration images "
                           f"({accuracy.data if accuracy else None})")
        else:
            calibration = "none: no calibration data given (--data); INT8 not offered"
        if self.config.precision == "int8" and cache_name is None:
            raise ToolchainError("an int8 engine needs calibration data: pass --data")
        sparse = has_2_4_sparse_weights(onnx_path)
        _write_executable(folder / "build_engine.sh", engine_build_script(
            self.config.precision, calib_cache_name=cache_name if self.config.precision == "int8" else None,
            sparse_2_4=sparse))
        _write_executable(folder / "run.py", run_script())
        return {**tensorrt, "int8_calibration": calibration, "calibration_cache": cache_name, "sparsity_2_4": sparse}

    def _unmeasured(self, manifest: Manifest, latency: Latencies) -> Latencies:
        """No device was reachable: say why, and give the roofline prior, labelled as a prediction."""
        prior = roofline_prior_ms(self.device, manifest.pruning.macs, manifest.pruning.params, self.config.precision)
        why = latency.unreachable or "no reachable device (set RPC_TRACKER and RPC_KEY to measure on the board)"
        predicted = Latency.predicted_by(
            "an uncalibrated roofline prior from the device table", prior,
            " (max of 2*MACs/peak and weight bytes/bandwidth); a lower bound, not a measurement",
        ) if prior is not None else Latency(None, "none: the device table has no peak figures")
        return replace(latency, not_measured=f"not measured: {why}", predicted=predicted)


def latency_summary(latency: Latencies, device: str) -> str:
    """One sentence that says whether the latency was measured or predicted, and from what."""
    measured, predicted = latency.measured, latency.predicted
    if measured is not None and measured.ms is not None:
        how = "; ".join(f"{name} {value}" for name, value in (("statistic", measured.statistic),
                                                                ("clock", measured.clock)) if value)
        return f"measured latency on {device}: {measured.ms:.3f} ms ({measured.source}{'; ' + how if how else ''})"
    shown = f"{predicted.ms:.4f} ms" if predicted is not None and predicted.ms is not None else "none"
    return f"latency NOT measured (no reachable {device}); predicted {shown}: {predicted.source if predicted else ''}"


def board_readme(manifest: Manifest) -> str:
    """The short README.md for the person at the board."""
    deployment, pruning, accuracy = manifest.deployment, manifest.pruning, manifest.accuracy
    device = deployment.device_name
    lines = [
        f"# {manifest.model} for {device}",
        "",
        f"Built by toolchain {(deployment.versions or {}).get('toolchain')} on {manifest.created_at}.",
        f"Parameters {pruning.params:,} (dense {pruning.dense_params:,}); "
        f"MACs {pruning.macs:,} (dense {pruning.dense_macs:,}).",
    ]
    if accuracy is not None and accuracy.pruned is not None:
        lines.append(f"Accuracy on {accuracy.data} test split: {accuracy.pruned:.2%} "
                     f"(dense {accuracy.dense:.2%}), measured on the build host.")
    lines.append(latency_summary(manifest.latency, device) + ".")
    lines += ["", "## Files", "- `model.onnx`: the pruned network, checked against PyTorch on the build host.",
              f"- `{deployment.tvm['library']}`: the TVM library (load with `tvm.runtime.load_module` and run it "
              "with `tvm.relax.VirtualMachine(lib, device)['main']`)."]
    if deployment.tensorrt is not None:
        lines += [
            "- `build_engine.sh`: builds `model.engine` with `trtexec` (on the board: TensorRT engines are "
            "device-specific).",
            "- `run.py`: loads `model.engine` with TensorRT's Python API and times it with CUDA events.",
            f"- `calib.cache`: INT8 calibration cache ({deployment.tensorrt['int8_calibration']})."
            if deployment.tensorrt["calibration_cache"] else
            "- no `calib.cache`: no calibration data was given, so only FP16/FP32 engines can be built.",
            "", "## On the board", "```", "./build_engine.sh", "python3 run.py model.engine", "```",
        ]
    return "\n".join(lines) + "\n"


def write_bundle(bundle: BundleConfig, pipeline: PipelineConfig, step: Step = lambda _: None) -> dict:
    """Prune, export, verify and package for `bundle.device`; return the manifest."""
    device = get_device(bundle.device)
    if bundle.precision not in ENGINE_PRECISIONS:
        raise ToolchainError(f"engine precision {bundle.precision!r} is not one of {', '.join(ENGINE_PRECISIONS)}")
    if device.cross_compiler and shutil.which(device.cross_compiler) is None:  # fail before the slow steps
        raise ToolchainError(f"cross compiler {device.cross_compiler} not found; run `make cross-tools` "
                             "(installs g++-aarch64-linux-gnu through apt)")
    if bundle.precision == "int8" and device.tensorrt_on_device and resolve_data(pipeline.data, pipeline.model) is None:
        raise ToolchainError("an int8 engine needs calibration data: pass --data")
    return write_pruned_folder(pipeline, step, extend=_TargetArtifacts(device, bundle))
