"""Round trip: arch.json + safetensors rebuild a pruned model with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import example_input
from toolchain import ToolchainError, create_model, load_pruned, prune
from toolchain.archive import write_arch_and_weights
from toolchain.inputs import InputSpec, specs_of


@pytest.mark.parametrize("name", ["demo", "densenet121", "vit_tiny", "unet", "mobilenet_v2"])
def test_round_trip_gives_identical_outputs(name, tmp_path):
    dense = create_model(name)
    x = example_input(name)
    result = prune(dense, x, ratio=0.5)
    write_arch_and_weights(tmp_path, result.model, dense, f"zoo:{name}", specs_of(x), result.widths)
    arch = json.loads((tmp_path / "arch.json").read_text())
    assert arch["layers"], "arch.json records the new shapes"
    assert all(set(layer) == {"type", "tensors", "attrs"} for layer in arch["layers"].values())
    rebuilt, _ = load_pruned(tmp_path)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model(x))


def test_missing_or_foreign_folders_are_refused(tmp_path):
    with pytest.raises(ToolchainError, match="arch.json is missing"):
        load_pruned(tmp_path)
    (tmp_path / "arch.json").write_text("{not json")
    with pytest.raises(ToolchainError, match="not valid JSON"):
        load_pruned(tmp_path)


def test_arch_for_another_model_is_refused(tmp_path):
    dense = create_model("demo")
    x = example_input("demo")
    result = prune(dense, x, ratio=0.5)
    cifar_input = (InputSpec.float_input((1, 3, 32, 32)),)
    write_arch_and_weights(tmp_path, result.model, dense, "zoo:resnet56_cifar", cifar_input, result.widths)
    with pytest.raises(ToolchainError):
        load_pruned(tmp_path)


def test_a_model_file_named_in_arch_json_is_imported_only_when_asked(tmp_path):
    factory = tmp_path / "theirs.py"
    marker = tmp_path / "ran"
    factory.write_text("import torch.nn as nn\n"
                       f"open({str(marker)!r}, 'w').write('code ran')\n"
                       "def make():\n    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))\n")
    folder = tmp_path / "received"
    folder.mkdir()
    (folder / "arch.json").write_text(json.dumps({"format_version": 1, "model": f"{factory}:make",
                                                  "input_shape": [1, 4], "per_group_widths": {}, "layers": {}}))
    marker.unlink(missing_ok=True)
    with pytest.raises(ToolchainError, match="names the model file .*theirs.py:make.*--trust-model-file"):
        load_pruned(folder)
    assert not marker.exists(), "the file's code did not run"
    with pytest.raises(ToolchainError, match="weights"):  # past the refusal: the factory was imported
        load_pruned(folder, trust_model_file=True)
    assert marker.exists()


def test_a_shape_cached_by_forward_is_not_recorded_as_architecture():
    """Ultralytics' Detect caches its input's torch.Size (with anchors that are not saved): never restore it."""
    from torch import nn

    from toolchain.archive import describe_architecture

    class CachesShape(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.shape = nn.Conv2d(3, 4, 1), None

        def forward(self, x):
            self.shape = x.shape
            return self.conv(x)

    dense, pruned = CachesShape(), CachesShape()
    pruned.conv = nn.Conv2d(3, 2, 1)
    pruned(torch.randn(1, 3, 4, 4))
    layers = describe_architecture(pruned, dense)
    assert set(layers) == {"conv"} and layers["conv"]["attrs"] == {"out_channels": 2}


class _HeadTable(torch.nn.Module):
    """A per-channel table pruned with its layer next to a non-persistent index buffer (as in Swin attention)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.proj = torch.nn.Linear(4, width)
        self.out = torch.nn.Linear(width, 3)
        self.register_buffer("index", torch.arange(width).flip(0), persistent=False)

    def forward(self, x):
        return self.out(torch.relu(self.proj(x))) + self.index[:3].float()


def test_unchanged_non_persistent_buffers_survive_the_round_trip(tmp_path):
    """Seen on timm Swin: its relative_position_index (not in the weights file) came back as zeros once its
    module's bias table had lost heads, and the reloaded model no longer matched its verified ONNX."""
    torch.manual_seed(0)
    dense = _HeadTable().eval()
    result = prune(dense, torch.randn(2, 4), ratio=0.5)
    result.model.proj.register_buffer("scratch", torch.arange(4), persistent=False)  # in a module that changed
    dense.proj.register_buffer("scratch", torch.arange(4), persistent=False)
    x = torch.randn(2, 4)
    write_arch_and_weights(tmp_path, result.model, dense, "unused", specs_of(x), result.widths)
    rebuilt, _ = load_pruned(tmp_path, model=dense)
    assert torch.equal(rebuilt.proj.scratch, torch.arange(4))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model(x))


def test_a_non_persistent_buffer_that_changed_shape_is_refused(tmp_path):
    torch.manual_seed(0)
    dense = _HeadTable().eval()
    result = prune(dense, torch.randn(2, 4), ratio=0.5)
    result.model.proj.register_buffer("scratch", torch.zeros(2), persistent=False)
    dense.proj.register_buffer("scratch", torch.zeros(8), persistent=False)
    with pytest.raises(ToolchainError, match="non-persistent buffer 'scratch'"):
        write_arch_and_weights(tmp_path, result.model, dense, "unused", specs_of(torch.randn(2, 4)), result.widths)


def test_modules_that_check_their_state_dict_version_reload(tmp_path):
    """torchvision's MNASNet refuses a state dict without module versions, which a safetensors file lacks."""
    pytest.importorskip("torchvision", reason="torchvision is not installed")
    from toolchain.coverage import build

    built = build("torchvision:mnasnet0_5", "small")
    result = prune(built.model, built.inputs, ratio=0.5)
    write_arch_and_weights(tmp_path, result.model, built.model, "unused", specs_of(built.inputs), result.widths)
    rebuilt, _ = load_pruned(tmp_path, model=build("torchvision:mnasnet0_5", "small").model)
    with torch.no_grad():
        assert torch.equal(rebuilt(built.inputs), result.model(built.inputs))


def test_tied_weights_are_written_apart_and_nothing_else_is_copied(tmp_path):
    """safetensors refuses tensors that share memory; only those (and non-contiguous ones) are copied, since a
    copy of a 600 M-parameter state costs seconds."""
    from safetensors.torch import load_file, save_file

    from toolchain.archive import _saveable

    embed = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embed.weight  # tied, as language models tie input and output embeddings
    transposed = torch.randn(3, 5).t()
    state = {"embed.weight": embed.weight, "head.weight": head.weight, "other": transposed}
    saveable = _saveable(state)
    assert saveable["embed.weight"].data_ptr() == embed.weight.data_ptr()
    assert saveable["head.weight"].data_ptr() != embed.weight.data_ptr()
    assert saveable["other"].is_contiguous()
    save_file(saveable, str(tmp_path / "w.safetensors"))
    loaded = load_file(str(tmp_path / "w.safetensors"))
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.items())


def test_weights_written_by_a_second_thread_are_the_same_file(tmp_path):
    """The pipeline writes weights.safetensors in a thread while ONNX is exported; the file is the same."""
    from concurrent.futures import ThreadPoolExecutor

    dense = create_model("demo")
    x = example_input("demo")
    result = prune(dense, x, ratio=0.5)
    (tmp_path / "direct").mkdir()
    (tmp_path / "thread").mkdir()
    assert write_arch_and_weights(tmp_path / "direct", result.model, dense, "zoo:demo", specs_of(x),
                                  result.widths) is None
    with ThreadPoolExecutor(1) as writer:
        written = write_arch_and_weights(tmp_path / "thread", result.model, dense, "zoo:demo", specs_of(x),
                                         result.widths, writer)
        written.result()
    for name in ("arch.json", "weights.safetensors"):
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "thread" / name).read_bytes()
