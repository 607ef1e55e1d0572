"""The device table: names and aliases, datasheet facts with sources, the host entry, TVM target dicts."""

import dataclasses

import pytest

from toolchain.errors import ToolchainError
from toolchain.targets.devices import ALIASES, PRECISIONS, DeviceProfile, get_device, list_devices


def test_table_lists_the_issue_devices():
    assert list_devices() == ["cpu", "h100", "jetson-orin", "jetson-xavier"]


def test_jetson_is_an_alias_of_orin():
    assert ALIASES["jetson"] == "jetson-orin"
    assert get_device("jetson") == get_device("jetson-orin")
    assert get_device("jetson").cuda_sm == "sm_87"


def test_unknown_device_names_the_valid_ones():
    with pytest.raises(ToolchainError, match="unknown device 'tpu'.*cpu, h100, jetson-orin, jetson-xavier"):
        get_device("tpu")


GPU_ARCHS = [("jetson-orin", "sm_87"), ("jetson-xavier", "sm_72"), ("h100", "sm_90")]


@pytest.mark.parametrize("name, sm", GPU_ARCHS)
def test_gpu_entries_have_roofline_facts_and_targets(name, sm):
    device = get_device(name)
    assert device.cuda_sm == sm and device.has_gpu
    assert device.tvm_device_target["kind"] == "cuda" and device.tvm_device_target["arch"] == sm
    assert device.tvm_host_target["kind"] == "llvm"
    assert device.tvm_host_target["mtriple"] == device.cpu_triple
    assert device.memory_bandwidth_gb_per_s > 0
    assert 0 < device.peak_flops("fp32") < device.peak_flops("fp16") < device.peak_flops("int8")
    assert "datasheet" in device.source.lower() or "data sheet" in device.source.lower()
    assert device.tensorrt_on_device and device.tensorrt_version
    ridge = device.ridge_point_flop_per_byte("fp16")
    assert ridge == pytest.approx(device.peak_flops("fp16") / (device.memory_bandwidth_gb_per_s * 1e9))


@pytest.mark.parametrize("name", ["jetson-orin", "jetson-xavier"])
def test_jetsons_are_cross_compiled_for_aarch64(name):
    device = get_device(name)
    assert device.cpu_triple == "aarch64-linux-gnu"
    assert device.cross_compiler == "aarch64-linux-gnu-g++"


def test_orin_figures_match_the_datasheet():
    orin = get_device("jetson-orin")
    assert orin.memory_bandwidth_gb_per_s == 204.8
    assert orin.peak_flops("int8") * 2 == pytest.approx(170e12)  # 170 sparse INT8 TOPS on the GPU


def test_host_cpu_reads_the_machine_and_invents_no_peaks():
    cpu = get_device("cpu")
    assert cpu.cuda_sm is None and cpu.tvm_device_target is None
    assert cpu.memory_bandwidth_gb_per_s is None
    assert all(cpu.peak_flops(p) is None for p in PRECISIONS)
    assert cpu.ridge_point_flop_per_byte("fp32") is None
    assert "logical cores" in cpu.description
    assert cpu.tvm_host_target["kind"] == "llvm"
    assert not cpu.tensorrt_on_device


def test_profiles_are_frozen_and_read_only():
    orin = get_device("jetson-orin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        orin.cuda_sm = "sm_90"
    with pytest.raises(TypeError):
        orin.peak_flops_per_s["fp32"] = 1.0
    with pytest.raises(TypeError):
        orin.tvm_host_target["mcpu"] = "generic"


def test_unknown_precision_is_rejected():
    with pytest.raises(ToolchainError, match="unknown precision 'fp4'"):
        get_device("h100").peak_flops("fp4")
    with pytest.raises(ValueError, match="unknown precision"):
        dataclasses.replace(get_device("h100"), peak_flops_per_s={"fp64": 1.0})


@pytest.mark.tvm
@pytest.mark.parametrize("name", list_devices())
def test_tvm_accepts_every_target_dict(name):
    tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install -e '.[tvm]')")
    device: DeviceProfile = get_device(name)
    host = tvm.target.Target(dict(device.tvm_host_target))
    assert host.kind.name == "llvm"
    if device.tvm_device_target is not None:
        gpu = tvm.target.Target(dict(device.tvm_device_target))
        assert gpu.kind.name == "cuda" and str(gpu.attrs["arch"]) == device.cuda_sm
