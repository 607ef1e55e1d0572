"""`layerwise`: an MLP on per-layer features whose per-layer latencies are summed over the model.

Because it reads layers, not one architecture's width vector, it answers for architectures it never saw.
Each layer's time is written as a roofline-shaped sum the MLP modulates,
    ms = exp(h0) * compute_scale * MMACs + exp(h1) * memory_scale * Melements moved + exp(h2) * overhead,
so an unseen layer with more channels extrapolates through MACs and bytes rather than through the MLP alone;
the MLP learns the efficiency of each kind of layer (including alignment of its channel counts). It is
trained on whole-model measurements (the loss compares the summed prediction with the measured latency)
and, where the campaign made them, on single-op measurements, each a "model" of one layer: those teach
the per-layer cost directly and are what lets it transfer to an unseen architecture.

Example:
    >>> predictor = create_predictor("layerwise", meta); predictor.fit(train_queries)
    >>> predictor.predict_ms(LatencyQuery.from_model("zoo:resnet50", model, (1, 3, 224, 224)))
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.latency.features import FEATURE_NAMES, layer_features
from toolchain.latency.predictors import (
    LatencyPredictor,
    LatencyQuery,
    register_predictor,
)
from toolchain.threads import torch_threads

HIDDEN_UNITS = 64
LEARNING_RATE = 3e-3
# Priors for one thread of a current CPU; the MLP learns multiplicative corrections around them.
COMPUTE_MS_PER_MMAC = 0.02
MEMORY_MS_PER_MELEMENT = 0.2
OVERHEAD_MS_PER_LAYER = 0.002


class LayerwiseNet(nn.Module):
    """Per-layer features [n_layers, n_features] -> per-layer ms [n_layers]."""

    def __init__(self, n_features: int, hidden_units: int = HIDDEN_UNITS):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(n_features, hidden_units),
            nn.SiLU(),
            nn.Linear(hidden_units, hidden_units),
            nn.SiLU(),
            nn.Linear(hidden_units, 3),
        )
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        scales = [
            math.log(COMPUTE_MS_PER_MMAC),
            math.log(MEMORY_MS_PER_MELEMENT),
            math.log(OVERHEAD_MS_PER_LAYER),
        ]
        self.register_buffer("log_scales", torch.tensor(scales))

    def forward(self, features: torch.Tensor, mmacs: torch.Tensor, melements: torch.Tensor) -> torch.Tensor:
        h = self.mlp((features - self.feature_mean) / self.feature_std) + self.log_scales
        return torch.exp(h[:, 0]) * mmacs + torch.exp(h[:, 1]) * melements + torch.exp(h[:, 2])


def _layer_batch(
    queries: list[LatencyQuery],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All layers of all queries stacked, plus which query each layer belongs to."""
    features, mmacs, melements, owner = [], [], [], []
    for index, query in enumerate(queries):
        for layer in query.layers:
            features.append(layer_features(layer))
            mmacs.append(layer.macs / 1e6)
            melements.append((layer.input_elements + layer.output_elements) / 1e6)
            owner.append(index)
    return (
        torch.from_numpy(np.stack(features)),
        torch.tensor(mmacs, dtype=torch.float32),
        torch.tensor(melements, dtype=torch.float32),
        torch.tensor(owner),
    )


@register_predictor
class LayerwisePredictor(LatencyPredictor):
    name = "layerwise"
    trains_on_single_ops = True
    train_steps = 1500

    def __init__(self, meta):
        super().__init__(meta)
        self.module = LayerwiseNet(len(FEATURE_NAMES))

    def _predict_tensor(self, queries: list[LatencyQuery], batch) -> torch.Tensor:
        features, mmacs, melements, owner = batch
        per_layer_ms = self.module(features, mmacs, melements)
        return torch.zeros(len(queries)).index_add(0, owner, per_layer_ms)

    def fit(self, train: list[LatencyQuery]) -> None:
        batch = _layer_batch(train)
        measured_log_ms = torch.log(torch.tensor([q.measured_ms for q in train], dtype=torch.float32))
        with torch_threads(1):
            self._train(train, batch, measured_log_ms)

    def _train(self, train: list[LatencyQuery], batch, measured_log_ms: torch.Tensor) -> None:
        torch.manual_seed(0)
        self.module = LayerwiseNet(len(FEATURE_NAMES))
        self.module.feature_mean.copy_(batch[0].mean(0))
        self.module.feature_std.copy_(batch[0].std(0).clamp_min(1e-3))
        optimizer = torch.optim.Adam(self.module.parameters(), lr=LEARNING_RATE)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.train_steps)
        for _ in range(self.train_steps):
            optimizer.zero_grad()
            predicted = self._predict_tensor(train, batch)
            loss = torch.mean((torch.log(predicted) - measured_log_ms) ** 2)
            loss.backward()
            optimizer.step()
            schedule.step()
        self.module.eval()

    def predict_many(self, queries: list[LatencyQuery]) -> list[float]:
        for query in queries:
            self.check_query(query)
        with torch.no_grad():
            return [float(v) for v in self._predict_tensor(queries, _layer_batch(queries))]

    def per_layer_ms(self, query: LatencyQuery) -> list[float]:
        """Predicted ms of each layer of one configuration (what the sum is made of)."""
        features, mmacs, melements, _ = _layer_batch([query])
        with torch.no_grad():
            return [float(v) for v in self.module(features, mmacs, melements)]

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict())

    def params(self) -> dict:
        return {"feature_names": list(FEATURE_NAMES)}

    def load_state(self, params: dict, tensors: dict[str, torch.Tensor]) -> None:
        if params.get("feature_names") != list(FEATURE_NAMES):
            raise ToolchainError("layerwise artifact was trained on other layer features; fit it again")
        self.module = LayerwiseNet(len(FEATURE_NAMES))
        self.module.load_state_dict(tensors)
        self.module.eval()
