"""The target/backend registry: listing, defaults, and clear errors for bad names."""

import pytest
import torch

from toolchain.errors import ToolchainError
from toolchain.targets import get_target, list_targets


def test_listing_names_the_required_targets_with_default_first():
    targets = list_targets()
    assert targets["cpu"][0] == "onnxruntime"
    assert {"onnxruntime", "tvm", "torch"} <= set(targets["cpu"])
    assert targets["cuda"][0] == "torch"
    assert {"torch", "tvm", "tensorrt"} <= set(targets["cuda"])


def test_default_cpu_target_is_onnxruntime_on_one_thread():
    target = get_target("cpu")
    assert (target.backend, target.threads, target.label) == ("onnxruntime", 1, "cpu/onnxruntime/1t")


def test_unknown_target_names_valid_choices():
    with pytest.raises(ToolchainError, match=r"unknown target 'npu'.*cpu: onnxruntime"):
        get_target("npu")


def test_unknown_backend_names_valid_choices():
    with pytest.raises(ToolchainError, match=r"unknown backend 'openvino'.*onnxruntime, torch, tvm"):
        get_target("cpu", "openvino")


def test_bad_thread_count_is_refused():
    with pytest.raises(ToolchainError, match="threads"):
        get_target("cpu", threads=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_cuda_without_gpu_says_why():
    with pytest.raises(ToolchainError, match="unavailable: no CUDA GPU"):
        get_target("cuda")


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "tvm"])
def test_every_cpu_backend_runs_a_small_model(backend):
    pytest.importorskip("tvm") if backend == "tvm" else None
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    runner = get_target("cpu", backend).prepare(model, torch.randn(1, 3, 16, 16))
    runner.run()
    times_ms = runner.device_times_ms(2)
    assert times_ms is None or (len(times_ms) == 2 and all(t > 0 for t in times_ms))
