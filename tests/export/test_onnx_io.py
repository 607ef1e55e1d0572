"""ONNX export of named, typed inputs and nested outputs; a file appears only once onnxruntime ran it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.export import onnx as onnx_export
from toolchain.export.onnx import export_onnx
from toolchain.inputs import InputSpec, call_model, make_inputs, output_names, output_shapes, vocab_size_of
from toolchain.models import resolve_model
from toolchain.pruning import prune

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def onnx_io(path):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [(i.name, i.type) for i in session.get_inputs()], [o.name for o in session.get_outputs()]


class NestedOutputs(nn.Module):
    """Named inputs of two dtypes in, a dict holding a tuple out."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.proj = nn.Linear(8, 4)

    def forward(self, ids, scale):
        hidden = self.embed(ids) * scale
        return {"logits": self.proj(hidden), "extra": (hidden.sum(-1), None, hidden.mean())}


def test_nested_outputs_and_typed_inputs_keep_their_names(tmp_path):
    model = NestedOutputs().eval()
    inputs = make_inputs((InputSpec("ids", "int64", (2, 5)), InputSpec("scale", "float32", (2, 5, 1))), vocab_size=10)
    exported = export_onnx(model, inputs, tmp_path / "m.onnx")
    assert exported.max_rel_err <= 1e-4 and exported.opset == 17
    assert onnx_io(exported.path) == ([("ids", "tensor(int64)"), ("scale", "tensor(float)")],
                                      ["logits", "extra.0", "extra.2"])
    assert output_names(call_model(model, inputs)) == ["logits", "extra.0", "extra.2"]


def test_an_unloadable_file_never_appears(tmp_path, monkeypatch):
    def write_garbage(model, example, outputs, path, opset, writer):
        path.write_bytes(b"not an onnx model")
        return opset, None

    monkeypatch.setattr(onnx_export, "_export", write_garbage)
    with pytest.raises(ToolchainError, match="onnxruntime cannot load"):
        export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_external_data_keeps_the_name_the_graph_gives_it(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    real_export = onnx_export._export

    def export_with_external_data(model, example, outputs, path, opset, large):  # as dynamo writes a large model
        written = real_export(model, example, outputs, path, opset, large)
        onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True,
                        location=path.name + ".data", size_threshold=0)
        return written

    monkeypatch.setattr(onnx_export, "_export", export_with_external_data)
    model, x = nn.Linear(4, 3).eval(), torch.randn(1, 4)
    exported = export_onnx(model, x, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert exported.external_data == (tmp_path / "model.onnx.data",)
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), model(x).detach(), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    folder = tmp_path_factory.mktemp("hf") / "gpt2"
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    model, specs = resolve_model(f"hf:{folder}", inputs=(InputSpec("input_ids", "int64", (1, 16)),
                                                       InputSpec("attention_mask", "int64", (1, 16))))
    return model, make_inputs(specs, vocab_size_of(model))


def test_gpt2_export_loads_and_runs_in_onnxruntime(tiny_gpt2, tmp_path):
    model, inputs = tiny_gpt2
    exported = export_onnx(model, inputs, tmp_path / "gpt2.onnx")
    assert exported.max_rel_err <= 1e-4
    assert onnx_io(exported.path) == ([("input_ids", "tensor(int64)"), ("attention_mask", "tensor(int64)")],
                                      ["logits"])


class SelfAttention(nn.Module):
    """Self-attention as torchvision's ViT encoder block calls it."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


def test_multihead_attention_exports_through_torchscript(tmp_path):
    """Regression: without gradients `nn.MultiheadAttention` took its fused fast path, which the TorchScript
    exporter cannot write, so every torchvision ViT went to the slower dynamo exporter (opset 18)."""
    exported = export_onnx(SelfAttention().eval(), torch.randn(1, 5, 16), tmp_path / "mha.onnx")
    assert exported.opset == 17 and exported.max_rel_err <= 1e-4
    assert torch.backends.mha.get_fastpath_enabled()  # switched back on afterwards


def test_a_failing_torchscript_export_prints_nothing(tmp_path, monkeypatch, capfd):
    """The TorchScript exporter's C++ log (left on by torch) dumped the whole IR graph to stderr when it failed,
    before the dynamo exporter was tried; the user saw hundreds of lines of it."""
    real_export = torch.onnx.export

    def torchscript_logs_and_fails(*args, dynamo=False, **kwargs):
        if not dynamo:
            torch._C._jit_set_onnx_log_enabled(True)
            torch._C._jit_onnx_log("Torch IR graph at exception: ", "graph(...)")
            raise RuntimeError("TorchScript exporter unavailable")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", torchscript_logs_and_fails)
    capfd.readouterr()
    exported = export_onnx(nn.Linear(3, 2), torch.randn(1, 3), tmp_path / "m.onnx")
    out, err = capfd.readouterr()
    assert exported.opset >= onnx_export.DYNAMO_MIN_OPSET
    assert "Torch IR graph" not in out + err and "[torch.onnx]" not in out + err


@pytest.mark.slow
def test_gpt2_dynamo_fallback_writes_a_model_onnxruntime_loads(tiny_gpt2, tmp_path, monkeypatch):
    """Regression: the dynamo exporter asked for opset 17 converted its opset-18 graph down and kept `Split`'s
    `num_outputs` attribute, a model onnxruntime refuses (INVALID_GRAPH); nothing noticed."""
    real_export = torch.onnx.export

    def torchscript_fails(*args, dynamo=False, **kwargs):
        if not dynamo:
            raise RuntimeError("TorchScript exporter unavailable")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", torchscript_fails)
    model, inputs = tiny_gpt2
    exported = export_onnx(model, inputs, tmp_path / "gpt2.onnx")
    assert exported.opset >= onnx_export.DYNAMO_MIN_OPSET and exported.max_rel_err <= 1e-4
    assert onnx_io(exported.path)[0] == [("input_ids", "tensor(int64)"), ("attention_mask", "tensor(int64)")]


def hf_image_model(kind: str):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    if kind == "resnet":
        return transformers.ResNetForImageClassification(transformers.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=4))
    return transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=4))


def prune_and_export(spec: str, tmp_path, input_shape=None):
    dense, specs = resolve_model(spec, input_shape=input_shape)
    inputs = make_inputs(specs, vocab_size_of(dense))
    result = prune(dense, inputs, ratio=0.5)
    assert result.manifest["params"] < result.manifest["dense_params"]
    with torch.no_grad():
        dense_output, pruned_output = call_model(dense, inputs), call_model(result.model, inputs)
    assert output_shapes(pruned_output) == output_shapes(dense_output)
    exported = export_onnx(result.model, inputs, tmp_path / "model.onnx")
    assert exported.max_rel_err <= 1e-4
    assert onnx_io(exported.path)[1] == output_names(dense_output)


# HF ViT is left out here on purpose: its attention heads are pruned channel by channel until the graph
# wrapper prunes whole heads (issue 14, item 4), so a passing prune would not yet mean a right model.
@pytest.mark.parametrize("kind", ["resnet", "convnext"])
def test_hf_model_output_classes_prune_and_export(kind, tmp_path):
    folder = tmp_path / kind
    hf_image_model(kind).save_pretrained(folder)
    prune_and_export(f"hf:{folder}", tmp_path, input_shape=(1, 3, 32, 32))


@pytest.mark.slow
def test_torchvision_segmentation_dict_output_prunes_and_exports(tmp_path):
    pytest.importorskip("torchvision", reason="torchvision is not installed")
    prune_and_export("torchvision:lraspp_mobilenet_v3_large", tmp_path, input_shape=(1, 3, 32, 32))


def test_an_export_says_when_the_outputs_did_not_vary_with_the_input(tmp_path):
    varying = export_onnx(nn.Linear(4, 3).eval(), torch.randn(1, 4), tmp_path / "a.onnx")
    head = nn.Linear(4, 3).eval()
    nn.init.zeros_(head.weight)  # as a classifier that was never trained: its outputs are its bias
    constant = export_onnx(head, torch.randn(1, 4), tmp_path / "b.onnx")
    one_input = export_onnx(nn.Linear(4, 3).eval(), torch.randn(1, 4), tmp_path / "c.onnx", n_random=0)
    assert (varying.outputs_vary, constant.outputs_vary, one_input.outputs_vary) == (True, False, None)


class WithBuffers(nn.Module):
    """Parameters, BatchNorm statistics, a non-persistent buffer and tied weights: every kind of stored tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.register_buffer("offset", torch.linspace(0.0, 1.0, 8).view(1, 8, 1, 1), persistent=False)
        self.head = nn.Linear(8, 8)
        self.tail = nn.Linear(8, 8)
        self.tail.weight = self.head.weight

    def forward(self, x):
        h = (self.bn(self.conv(x)) + self.offset).mean(dim=(2, 3))
        return self.tail(torch.relu(self.head(h)))


def test_a_large_model_keeps_its_weights_beside_the_graph(tmp_path, monkeypatch):
    """Above LARGE_EXPORT_PARAMS the graph is exported without weights and each is written once into
    model.onnx.data (the in-memory protobuf copies cost seconds on a 400 M-parameter model), and the file is
    compared with PyTorch on one random input besides the example (each costs seconds in both runtimes)."""
    onnx = pytest.importorskip("onnx")
    monkeypatch.setattr(onnx_export, "LARGE_EXPORT_PARAMS", 0)
    random_inputs = []
    real_random_like = onnx_export.random_like
    monkeypatch.setattr(onnx_export, "random_like", lambda *a: random_inputs.append(1) or real_random_like(*a))
    model = WithBuffers().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    exported = export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "model.onnx")
    assert exported.opset == 17 and exported.max_rel_err <= 1e-5 and exported.outputs_vary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert exported.external_data == (tmp_path / "model.onnx.data",)
    graph = onnx.load(str(exported.path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input"]
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    assert {"bn.running_mean", "bn.running_var", "head.weight"} <= {t.name for t in graph.initializer}
    assert len(random_inputs) == 1  # compared on the example and one random input (two for smaller models)


def test_a_failed_weights_write_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """A large model's model.onnx.data is written by a second thread; its failure (a full disk) still surfaces
    as one error, and no file or staging folder is left."""
    from toolchain.export import onnx_weights

    monkeypatch.setattr(onnx_export, "LARGE_EXPORT_PARAMS", 0)

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_weights, "_write_data", disk_full)
    with pytest.raises(ToolchainError, match="cannot write the ONNX weights beside model.onnx: .*No space left"):
        export_onnx(WithBuffers().eval(), torch.randn(2, 3, 8, 8), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


class WithUnusedHead(nn.Module):
    """A training-only head (GoogLeNet's auxiliary classifiers) that the inference forward never runs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.aux = nn.Linear(4, 1000)

    def forward(self, x):
        return self.body(x)


def test_a_large_model_writes_only_the_weights_its_graph_reads(tmp_path, monkeypatch):
    """The weights reach the exporter as inputs (no parameter is left for its shape inference to copy); those
    no node reads are not written; nodes keep the names of the modules that run them."""
    onnx = pytest.importorskip("onnx")
    monkeypatch.setattr(onnx_export, "LARGE_EXPORT_PARAMS", 0)
    model = WithUnusedHead().eval()
    exported = export_onnx(model, torch.randn(2, 4), tmp_path / "model.onnx")
    graph = onnx.load(str(exported.path), load_external_data=False).graph
    assert sorted(t.name for t in graph.initializer) == ["body.bias", "body.weight"]
    assert [n.name for n in graph.node] == ["/body/Gemm"], "nodes are named by the module that runs them"
    assert (tmp_path / "model.onnx.data").stat().st_size < 4096 + 4 * 4 * 4, "the 4000-weight head is not written"
    assert all(isinstance(p, nn.Parameter) for p in model.parameters()), "the model's parameters are put back"
