"""Apache TVM (Relax): compile ONNX on the host with `llvm` and time with TVM's evaluator, locally or on a
remote device through a TVM RPC tracker (cross-compiling with the endpoint's target dict)."""

from __future__ import annotations

import gc
import hashlib
import json
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from toolchain.inputs import ModelInputs, input_tensors
from toolchain.targets import RpcEndpoint, Runtime, register_backend
from toolchain.targets.backends._onnx import onnx_bytes_for_timing

HOST_TVM_TARGET = {"kind": "llvm"}
RPC_SESSION_TIMEOUT_S = 600
RENEW_AFTER_S = 0.8 * RPC_SESSION_TIMEOUT_S
FREE_DEVICE_WAIT_S = 30.0


def compile_onnx(onnx_model: bytes, tvm_target: dict):
    """ONNX bytes -> TVM Relax executable for `tvm_target` (apache-tvm 0.27 accepts target dicts only)."""
    import onnx

    from toolchain.export.tvm import compile_relax

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile_relax(onnx.load_from_string(onnx_model), tvm_target)


class TvmRunner:
    """A Relax VM on a (local or remote) device with its input already on the device."""

    def __init__(self, executable_or_module, device, example_input, session=None):
        import tvm
        from tvm import relax

        self.session = session  # kept alive: the remote module dies with its session
        self.device = device
        self.vm = relax.VirtualMachine(executable_or_module, device)
        # Every input in call order (the ONNX graph's order), each with its own dtype.
        self.inputs = [tvm.runtime.tensor(t.detach().cpu().numpy(), device) for t in input_tensors(example_input)]

    def run(self) -> None:
        self.vm["main"](*self.inputs)
        self.device.sync()

    def device_times_ms(self, repeats: int) -> list[float] | None:
        evaluator = self.vm.time_evaluator("main", self.device, number=1, repeat=repeats)
        return [seconds * 1e3 for seconds in evaluator(*self.inputs).results]


_remote_sessions: dict[RpcEndpoint, tuple[object, float]] = {}  # endpoint -> (session, opened at)


def _wait_for_free_device(tracker, endpoint: RpcEndpoint, wait_s: float) -> None:
    """Return when the tracker has a free server for the key; raise at once when it has none at all."""
    deadline = time.monotonic() + wait_s
    while True:
        queues = tracker.summary().get("queue_info", {})
        queue = queues.get(endpoint.key, {})
        if queue.get("free", 0) > 0:
            return
        # A key the tracker has never seen has no device to wait for; a busy one (a session just released
        # re-registers within a second or two) is waited for until the deadline.
        if endpoint.key not in queues or time.monotonic() > deadline:
            raise ConnectionError(
                f"tracker {endpoint.tracker_host}:{endpoint.tracker_port} has no free device "
                f"with key {endpoint.key!r} ({queue or 'none registered'})"
            )
        time.sleep(0.2)


def remote_session(endpoint: RpcEndpoint):
    """The open RPC session for `endpoint`, requested from the tracker on first use and renewed before the
    server's session timeout can end it in the middle of a timing."""
    session, opened_at = _remote_sessions.get(endpoint, (None, 0.0))
    if session is not None and time.monotonic() - opened_at > RENEW_AFTER_S:
        drop_remote_session(endpoint)
        del session  # the server serves one session at a time: release it before asking for the next
        gc.collect()
        session = None
    if session is None:
        from tvm import rpc

        tracker = rpc.connect_tracker(endpoint.tracker_host, endpoint.tracker_port)
        _wait_for_free_device(tracker, endpoint, FREE_DEVICE_WAIT_S)
        session = tracker.request(endpoint.key, priority=1, session_timeout=RPC_SESSION_TIMEOUT_S, max_retry=1)
        _remote_sessions[endpoint] = (session, time.monotonic())
    return session


def drop_remote_session(endpoint: RpcEndpoint) -> None:
    """Forget a (possibly dead) session so that the next use reconnects."""
    _remote_sessions.pop(endpoint, None)


class _TvmBackend:
    device_kind = "cpu"

    def unavailable_reason(self, target: Runtime) -> str | None:
        try:
            metadata.version("apache-tvm")
        except metadata.PackageNotFoundError:
            return "the apache-tvm package is not installed (pip install -e '.[tvm]')"
        return None

    def versions(self) -> dict[str, str]:
        return {"apache-tvm": metadata.version("apache-tvm"), "torch": torch.__version__}

    def prepare(self, model: nn.Module, example_input: ModelInputs, target: Runtime) -> TvmRunner:
        import tvm

        executable = compile_for(model, example_input, target)
        if target.rpc is None:
            tvm.get_global_func("runtime.config_threadpool")(0, target.threads)
            device = tvm.cpu() if self.device_kind == "cpu" else tvm.cuda()
            return TvmRunner(executable, device, example_input)
        return load_on_session(executable, example_input, target, remote_session(target.rpc))


def compile_for(model: nn.Module, example_input: ModelInputs, target: Runtime):
    """`model` compiled on this host for `target`'s device (its RPC endpoint's TVM target, if any)."""
    return compile_onnx(onnx_bytes_for_timing(model, example_input), tvm_target(target))


def tvm_target(target: Runtime) -> dict:
    """The TVM target dict a model for `target` is compiled with (a board's own, from its RPC endpoint)."""
    if target.rpc is not None and target.rpc.tvm_target_json:
        return json.loads(target.rpc.tvm_target_json)
    return HOST_TVM_TARGET if target.name == "cpu" else {"kind": "cuda"}


def load_on_session(executable, example_input: ModelInputs, target: Runtime, session) -> TvmRunner:
    """Upload a compiled model to the remote device of `session` and bind `example_input` there (a device farm
    holds one session per board, so the session is an argument)."""
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "model.tar"
        executable.export_library(str(library))
        # One name per library content: the server dlopen()s the extracted shared object, and dlopen
        # hands back the library already loaded under a path, so a reused name would time the first
        # model uploaded in this session again instead of the new one.
        remote_name = f"model-{hashlib.sha256(library.read_bytes()).hexdigest()[:16]}.tar"
        session.upload(str(library), remote_name)
    session.get_function("runtime.config_threadpool")(0, target.threads)
    device = session.cpu() if target.name == "cpu" else session.cuda()
    return TvmRunner(session.load_module(remote_name), device, example_input, session=session)


@register_backend("cpu", "tvm")
class TvmCpuBackend(_TvmBackend):
    device_kind = "cpu"


@register_backend("cuda", "tvm")
class TvmCudaBackend(_TvmBackend):
    device_kind = "cuda"

    def unavailable_reason(self, target: Runtime) -> str | None:
        reason = super().unavailable_reason(target)
        if reason or target.rpc is not None:
            return reason
        return None if torch.cuda.is_available() else "no CUDA GPU is visible"
