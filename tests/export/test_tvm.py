"""TVM export: the host build matches PyTorch; the Jetson cross build is aarch64 with sm_87 code."""

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.targets.devices import get_device

pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install -e '.[tvm]')")
from toolchain.export import tvm as tvm_export  # noqa: E402
from toolchain.export.tvm_build import find_nvcc, nvcc_supported_archs  # noqa: E402
from toolchain.export.tvm_inspect import cubin_arch, fatbin_entries, inspect_library  # noqa: E402

pytestmark = pytest.mark.tvm
REPO_ROOT = Path(__file__).resolve().parents[2]


class ConvNet(nn.Module):
    """Conv-BN-ReLU stem, pooling and a classifier: the shape of the zoo's CNNs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))

    def forward(self, x):
        return self.head(self.features(x))


class ResidualDepthwise(nn.Module):
    """Depthwise-separable block with a residual add (MobileNet-like grouping)."""

    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pointwise = nn.Conv2d(6, 6, 1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x):
        return torch.relu(x + self.bn(self.pointwise(torch.relu(self.depthwise(x)))))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.GELU(), nn.Linear(32, 10))


MODELS = {
    "convnet": (ConvNet, (1, 3, 16, 16)),
    "residual_depthwise": (ResidualDepthwise, (1, 6, 12, 12)),
    "mlp": (mlp, (2, 1, 28, 28)),
}


def export(model: nn.Module, shape, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(shape),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"])
    return path


def make_model(name: str):
    torch.manual_seed(0)
    factory, shape = MODELS[name]
    model = factory().eval()
    for module in model.modules():  # non-trivial BN statistics, so folding them is exercised
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model, shape


@pytest.fixture(scope="module")
def convnet_lib(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convnet")
    model, shape = make_model("convnet")
    onnx_path = export(model, shape, tmp / "convnet.onnx")
    return model, shape, onnx_path, tvm_export.compile_onnx_for_host(onnx_path, tmp, threads=1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_host_build_matches_pytorch(name, tmp_path):
    model, shape = make_model(name)
    onnx_path = export(model, shape, tmp_path / f"{name}.onnx")
    lib = tvm_export.compile_onnx_for_host(onnx_path, tmp_path, threads=1)
    assert lib.name == f"{name}.tvm-host.so" and lib.with_suffix(".json").is_file()
    assert inspect_library(lib)["cuda_archs"] == []
    max_rel_err = tvm_export.verify_tvm_against(model, lib, torch.randn(shape), n_random=2)
    assert max_rel_err <= tvm_export.MAX_REL_ERR_FP32


def test_run_accepts_array_list_and_dict(convnet_lib):
    model, shape, _, lib = convnet_lib
    x = torch.randn(shape)
    with torch.no_grad():
        expected = model(x).numpy()
    for inputs in (x.numpy(), [x.numpy()], {"input": x.numpy()}):
        np.testing.assert_allclose(tvm_export.run_tvm_host(lib, inputs), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ToolchainError, match=r"missing TVM input\(s\) \['input'\]"):
        tvm_export.run_tvm_host(lib, {"image": x.numpy()})


def test_verify_rejects_a_different_model(convnet_lib):
    _, shape, _, lib = convnet_lib
    other, _ = make_model("convnet")
    with torch.no_grad():
        other.head[-1].bias.add_(1.0)
    with pytest.raises(ToolchainError, match="TVM library output differs from PyTorch"):
        tvm_export.verify_tvm_against(other, lib, torch.randn(shape))


def test_time_tvm_host_returns_one_figure_per_repeat(convnet_lib):
    _, shape, _, lib = convnet_lib
    times_ms = tvm_export.time_tvm_host(lib, shape, repeats=3)
    assert len(times_ms) == 3 and all(t > 0 for t in times_ms)
    with pytest.raises(ToolchainError, match="repeats"):
        tvm_export.time_tvm_host(lib, shape, repeats=0)


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ToolchainError, match="ONNX file not found"):
        tvm_export.compile_onnx_for_host(tmp_path / "missing.onnx", tmp_path)
    with pytest.raises(ToolchainError, match="TVM library not found"):
        tvm_export.run_tvm_host(tmp_path / "missing.so", np.zeros(1, np.float32))
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ToolchainError, match="TVM could not compile broken.onnx"):
        tvm_export.compile_onnx_for_host(tmp_path / "broken.onnx", tmp_path)


# --- CUDA binaries: the parser against what nvcc itself writes -------------------------------------

needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc (CUDA toolkit) not found")


@needs_nvcc
def test_fatbin_and_cubin_parsers_read_what_nvcc_wrote(tmp_path):
    source = tmp_path / "k.cu"
    source.write_text('extern "C" __global__ void add(float* a) { a[threadIdx.x] += 1.0f; }\n')
    fatbin = tmp_path / "k.fatbin"
    subprocess.run([find_nvcc(), "--fatbin", "-gencode", "arch=compute_87,code=sm_87",
                    "-gencode", "arch=compute_90,code=[sm_90,compute_90]", "-o", str(fatbin), str(source)],
                   check=True, capture_output=True)
    entries = fatbin_entries(fatbin.read_bytes(), 0)
    assert {(e["kind"], e["arch"]) for e in entries} == {("elf", "sm_87"), ("elf", "sm_90"), ("ptx", "sm_90")}
    assert {e["elf_arch"] for e in entries if e["kind"] == "elf"} == {"sm_87", "sm_90"}
    assert cubin_arch(b"not a cubin") is None


# --- Jetson cross build ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cross_compiler():
    """The Jetson cross compiler; installed once through `make cross-tools` (apt) when missing."""
    name = get_device("jetson-orin").cross_compiler
    if shutil.which(name) is None:
        result = subprocess.run(["make", "-s", "cross-tools"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=False)
        if shutil.which(name) is None:
            why = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"{name} is missing and `make cross-tools` could not install it: {why}")
    return name


@pytest.mark.slow
@needs_nvcc
def test_jetson_cross_build_is_aarch64_with_sm87_code(convnet_lib, cross_compiler, tmp_path):
    _, _, onnx_path, _ = convnet_lib
    lib = tvm_export.cross_compile(onnx_path, get_device("jetson"), tmp_path)
    assert lib.name == "convnet.jetson-orin.so"
    facts = inspect_library(lib)
    assert facts["elf_machine"] == "aarch64"
    assert "sm_87" in facts["cuda_sass_archs"]  # machine code, not only PTX
    assert facts["cuda_ptx_archs"] == ["sm_87"] and not facts["cuda_source_only"]
    readelf = shutil.which("aarch64-linux-gnu-readelf") or shutil.which("readelf")
    if readelf:  # a second witness for the CPU side
        header = subprocess.run([readelf, "-h", str(lib)], capture_output=True, text=True, check=True).stdout
        assert "AArch64" in header
    with pytest.raises(ToolchainError, match="built for aarch64"):
        tvm_export.run_tvm_host(lib, np.zeros((1, 3, 16, 16), np.float32))


@needs_nvcc
def test_cross_build_names_an_arch_nvcc_cannot_build(convnet_lib, tmp_path):
    xavier = get_device("jetson-xavier")
    if xavier.cuda_sm in nvcc_supported_archs(find_nvcc()):
        pytest.skip(f"this nvcc still builds {xavier.cuda_sm}")
    if shutil.which(xavier.cross_compiler) is None:
        pytest.skip(f"{xavier.cross_compiler} is missing; the arch check runs after it")
    with pytest.raises(ToolchainError, match="cannot compile for sm_72.*older CUDA toolkit"):
        tvm_export.cross_compile(convnet_lib[2], xavier, tmp_path)
