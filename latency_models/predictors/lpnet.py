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

HIDDEN_UNITS = 64
ENSEMBLE_SIZE = 3
ALIGNMENT_PERIODS = (8,)  # channel multiples the target's kernels favour (NCHWc8 on AVX2 CPUs)
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-2


def _mlp(n_inputs: int, hidden_units: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_inputs, hidden_units),
        nn.SiLU(),
        nn.Linear(hidden_units, hidden_units),
        nn.SiLU(),
        nn.Linear(hidden_units, 1),
    )


class LPNet(nn.Module):
    """Normalised widths [..., n_groups] -> latency in ms [...].

    Besides the widths the MLP reads, per group and alignment period p, (1 + cos(2*pi*channels/p)) / 2: a
    smooth, differentiable signal that is 1 where the channel count is a multiple of p. Without it an MLP on
    widths alone cannot see that kernels are markedly faster at aligned channel counts (see
    BENCHMARKS.md). A few MLPs trained from different seeds
    are averaged in log space, which steadies predictions between the measured configurations.
    """

    def __init__(
        self,
        dense_widths: tuple[int, ...],
        reference_ms: float = 1.0,
        hidden_units: int = HIDDEN_UNITS,
        periods: tuple[int, ...] = ALIGNMENT_PERIODS,
        ensemble_size: int = ENSEMBLE_SIZE,
    ):
        super().__init__()
        n_inputs = len(dense_widths) * (1 + len(periods))
        self.register_buffer("dense_widths", torch.tensor(dense_widths, dtype=torch.float32))
        self.register_buffer("periods", torch.tensor(periods, dtype=torch.float32))
        self.register_buffer("log_reference_ms", torch.tensor(math.log(reference_ms)))
        self.members = nn.ModuleList(_mlp(n_inputs, hidden_units) for _ in range(ensemble_size))

    def features(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        channels = (normalised_widths * self.dense_widths).unsqueeze(-1)
        alignment = (1 + torch.cos(2 * math.pi * channels / self.periods)) / 2
        return torch.cat([normalised_widths, alignment.flatten(-2)], dim=-1)

    def member_log_ms(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        """[ensemble, ...] log-latency of each member."""
        features = self.features(normalised_widths)
        return torch.stack([mlp(features).squeeze(-1) for mlp in self.members]) + self.log_reference_ms

    def log_ms(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return self.member_log_ms(normalised_widths).mean(0)

    def forward(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_ms(normalised_widths))


@register_predictor
class LPNetPredictor(LatencyPredictor):
    name = "lpnet"
    single_architecture = True
    train_steps = 2000

    def __init__(self, meta):
        super().__init__(meta)
        self.module = LPNet(tuple(meta.dense_widths) or (1,))

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
                raise ToolchainError("lpnet needs per-group widths (a pruned folder's manifest or a width dict)")
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
        self.module = LPNet(self.meta.dense_widths, reference_ms=float(target_log_ms.exp().median()))
        optimizer = torch.optim.AdamW(self.module.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.train_steps)
        for _ in range(self.train_steps):
            optimizer.zero_grad()
            # Each member fits the data on its own (mean of the members' losses, not loss of the mean).
            loss = torch.mean((self.module.member_log_ms(inputs) - target_log_ms) ** 2)
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
        return {
            "hidden_units": HIDDEN_UNITS,
            "alignment_periods": list(ALIGNMENT_PERIODS),
            "ensemble_size": len(self.module.members),
        }

    def load_state(self, params: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.module = LPNet(
            self.meta.dense_widths,
            hidden_units=params["hidden_units"],
            periods=tuple(params["alignment_periods"]),
            ensemble_size=params["ensemble_size"],
        )
        self.module.load_state_dict(tensors)
        self.module.eval()
