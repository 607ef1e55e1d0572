"""Named int64 inputs through ONNX export, onnxruntime verification and the timing runner (tiny model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain import ToolchainError
from toolchain.named_input_latency import NamedInputRunner, onnx_bytes, verify_runner

pytest.importorskip("onnxruntime", reason="needs onnxruntime")


class _TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding, self.proj = nn.Embedding(50, 8), nn.Linear(8, 4)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.proj((self.embedding(input_ids) * mask).sum(1) / mask.sum(1))


def _inputs():
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones(1, 12, dtype=torch.int64)}


def test_named_inputs_keep_names_and_dtypes_and_match_pytorch():
    model, inputs = _TokenModel().eval(), _inputs()
    runner = NamedInputRunner(onnx_bytes(model, inputs), inputs)
    declared = {i.name: i.type for i in runner.session.get_inputs()}
    assert declared == {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)"}
    assert verify_runner(model, runner, inputs) <= 1e-5
    runner.run()
    assert runner.device_times_ms(3) is None  # timed by a host clock


def test_a_runner_of_another_model_fails_verification():
    inputs = _inputs()
    runner = NamedInputRunner(onnx_bytes(_TokenModel().eval(), inputs), inputs)
    with pytest.raises(ToolchainError, match="differs from PyTorch"):
        verify_runner(_TokenModel().eval(), runner, inputs)
