"""`lpnet`: the latency-prediction network of W-Gates (Li et al., 2020), one per architecture and target.

An MLP maps the normalised per-group width vector (width / dense width, in the artifact's group order) to
latency. It predicts the log of the ratio to a reference latency, so training weighs relative errors and the
output stays positive; `LPNet.forward` is differentiable in the widths, which is what a gradient-based width
allocator needs.

Example:
    >>> predictor = load_predictor("latency_models/artifacts/resnet18-cpu-onnxruntime-lpnet")
    >>> net = predictor.module                       # torch nn.Module
    >>> x = predictor.normalise(widths).requires_grad_()
    >>> net(x).backward()                            # d latency_ms / d normalised widths in x.grad
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latency_models.measure import torch_threads
from latency_models.predictors import (
    LatencyPredictor,
    LatencyQuery,
    register_predictor,
)
from toolchain.errors import ToolchainError

HIDDEN_UNITS = 128
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-5


class LPNet(nn.Module):
    """Normalised widths [..., n_groups] -> latency in ms [...]."""

    def __init__(self, n_groups: int, reference_ms: float = 1.0, hidden_units: int = HIDDEN_UNITS):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(n_groups, hidden_units),
            nn.SiLU(),
            nn.Linear(hidden_units, hidden_units),
            nn.SiLU(),
            nn.Linear(hidden_units, 1),
        )
        self.register_buffer("log_reference_ms", torch.tensor(math.log(reference_ms)))

    def log_ms(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return self.mlp(normalised_widths).squeeze(-1) + self.log_reference_ms

    def forward(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_ms(normalised_widths))


@register_predictor
class LPNetPredictor(LatencyPredictor):
    name = "lpnet"
    single_architecture = True
    train_steps = 3000

    def __init__(self, meta):
        super().__init__(meta)
        self.module = LPNet(max(len(meta.group_names), 1))

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.meta.group_names

    def normalise(self, widths: dict[str, int]) -> torch.Tensor:
        """Widths by group name -> the normalised vector LPNet reads (groups not named stay dense)."""
        unknown = sorted(set(widths) - set(self.group_names))
        if unknown:
            raise ToolchainError(
                f"lpnet for {self.meta.models[0]} has no channel group(s) {unknown[:5]}; "
                f"its groups are {list(self.group_names)[:5]}..."
            )
        return torch.tensor(
            [
                widths.get(name, dense) / dense
                for name, dense in zip(self.group_names, self.meta.dense_widths, strict=True)
            ],
            dtype=torch.float32,
        )

    def _inputs(self, queries: list[LatencyQuery]) -> torch.Tensor:
        for query in queries:
            self.check_query(query)
            if query.widths is None:
                raise ToolchainError(
                    "lpnet needs per-group widths (a pruned folder's manifest or a width dict)"
                )
        return torch.stack([self.normalise(query.widths) for query in queries])

    def fit(self, train: list[LatencyQuery]) -> None:
        if not self.group_names:
            raise ToolchainError("lpnet needs the model's group names; the measurement database has none")
        inputs = self._inputs(train)
        target_log_ms = torch.log(torch.tensor([q.measured_ms for q in train], dtype=torch.float32))
        with torch_threads(1):
            self._train(inputs, target_log_ms)

    def _train(self, inputs: torch.Tensor, target_log_ms: torch.Tensor) -> None:
        torch.manual_seed(0)
        self.module = LPNet(len(self.group_names), reference_ms=float(target_log_ms.exp().median()))
        optimizer = torch.optim.Adam(self.module.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.train_steps)
        for _ in range(self.train_steps):
            optimizer.zero_grad()
            loss = torch.mean((self.module.log_ms(inputs) - target_log_ms) ** 2)
            loss.backward()
            optimizer.step()
            schedule.step()
        self.module.eval()

    def predict_many(self, queries: list[LatencyQuery]) -> list[float]:
        with torch.no_grad():
            return [float(v) for v in self.module(self._inputs(queries))]

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict())

    def params(self) -> dict:
        return {"hidden_units": HIDDEN_UNITS}

    def load_state(self, params: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.module = LPNet(len(self.group_names), hidden_units=params.get("hidden_units", HIDDEN_UNITS))
        self.module.load_state_dict(tensors)
        self.module.eval()
