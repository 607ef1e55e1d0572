"""What every allocator works on: allowed widths per group, a loss curve per group, a latency model.

The loss curve of a group estimates the calibration-loss increase when only its k best channels (by the
criterion) are kept: the share of the group's saliency that is lost, scaled so that at the probe width it
equals the loss increase measured on calibration data with that group alone masked (without data every
group weighs the same). Widths are restricted to multiples of the hardware step between a floor and the
dense width; the floor of a group grows with its measured sensitivity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from toolchain.errors import ToolchainError


@dataclass(frozen=True)
class GroupChoice:
    """The widths a group may take: multiples of `step` in [min_width, dense_width], plus dense_width.

    >>> GroupChoice("conv1", dense_width=20, step=8, min_width=8).allowed()
    [8, 16, 20]
    """

    name: str
    dense_width: int
    step: int
    min_width: int

    def allowed(self) -> list[int]:
        widths = list(range(self.min_width, self.dense_width + 1, self.step))
        if widths[-1] != self.dense_width:
            widths.append(self.dense_width)
        return widths

    def round(self, width: float) -> int:
        """The allowed width nearest to `width`."""
        return min(self.allowed(), key=lambda w: (abs(w - width), w))


class LatencyModel(Protocol):
    """Latency in ms of width configurations; `widths` is (configs, groups) channel counts, problem order."""

    differentiable: bool

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor: ...


class PredictorLatency:
    """A trained `lpnet` predictor seen as a LatencyModel over the problem's groups (others stay dense)."""

    differentiable = True

    def __init__(self, predictor, group_names: list[str]):
        self.predictor = predictor
        names = list(predictor.group_names)
        missing = [n for n in group_names if n not in names]
        if missing:
            raise ToolchainError(f"the latency predictor does not know group(s) {missing[:3]}; it was trained on "
                                 "another architecture or protection; re-profile this model")
        self.positions = torch.tensor([names.index(n) for n in group_names])
        self.dense = torch.tensor([float(d) for d in predictor.meta.dense_widths])
        self.n_predictor_groups = len(names)

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        normalised = torch.ones(widths.shape[0], self.n_predictor_groups)
        normalised = normalised.index_copy(1, self.positions, widths / self.dense[self.positions])
        return self.predictor.module(normalised)


@dataclass(frozen=True)
class AllocationProblem:
    groups: tuple[GroupChoice, ...]
    curves: dict[str, torch.Tensor]  # group -> loss increase when keeping k channels, k = 0..dense_width
    latency: LatencyModel
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # the criterion's raw scores (macs baseline)
    macs: Callable[[dict[str, int]], int] | None = None  # MACs of a width configuration

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def vector(self, widths: dict[str, int]) -> torch.Tensor:
        return torch.tensor([float(widths[g.name]) for g in self.groups])

    def predicted_ms_many(self, configs: list[dict[str, int]]) -> list[float]:
        with torch.no_grad():
            return [float(v) for v in self.latency.ms_batch(torch.stack([self.vector(c) for c in configs]))]

    def predicted_ms(self, widths: dict[str, int]) -> float:
        return self.predicted_ms_many([widths])[0]

    def loss(self, widths: dict[str, int]) -> float:
        return float(sum(self.curves[g.name][widths[g.name]] for g in self.groups))

    def dense(self) -> dict[str, int]:
        return {g.name: g.dense_width for g in self.groups}

    def narrowest(self) -> dict[str, int]:
        return {g.name: g.min_width for g in self.groups}

    def check_widths(self, widths: dict[str, int]) -> None:
        for g in self.groups:
            if widths.get(g.name) not in g.allowed():
                raise ToolchainError(f"allocator gave width {widths.get(g.name)} to {g.name!r}; "
                                     f"allowed: {g.allowed()}")


def check_reachable(problem: AllocationProblem, budget_ms: float) -> None:
    smallest_ms = problem.predicted_ms(problem.narrowest())
    if smallest_ms > budget_ms:
        raise ToolchainError(f"budget {budget_ms:.3f} ms is unreachable: the narrowest allowed model is predicted "
                             f"at {smallest_ms:.3f} ms (lower the per-layer floors or raise the budget)")


Sensitivity = dict[str, "float | dict[float, float]"]  # group -> loss increase, or {keep ratio: loss increase}


def _probes(value, probe_keep_ratio: float) -> dict[float, float]:
    return dict(value) if isinstance(value, dict) else {probe_keep_ratio: float(value)}


def loss_curves(scores: dict[str, torch.Tensor], widths: dict[str, int], sensitivity: Sensitivity | None,
                probe_keep_ratio: float = 0.5) -> dict[str, torch.Tensor]:
    """Loss increase of keeping the k best channels, k = 0..width, from the criterion's scores.

    The lost share of the group's saliency u(k) is mapped to loss through the probes (keep ratio -> measured
    loss increase): piecewise linear in u through (0, 0) and each probe, extended past the last probe with
    its slope, so the curve bends the way the measurements do (deep cuts cost more than linearly).

    >>> curve = loss_curves({"g": torch.tensor([3.0, 1.0])}, {"g": 2}, None)["g"]
    >>> [round(float(v), 3) for v in curve]
    [4.0, 1.0, 0.0]
    """
    curves = {}
    for name, score in scores.items():
        width = widths[name]
        score = _per_channel(score.float(), width)
        shifted = torch.sort(score - score.min() + 1e-6 * (score.abs().max() + 1e-12), descending=True).values
        lost = 1.0 - torch.cat([torch.zeros(1), torch.cumsum(shifted, 0)]) / shifted.sum()
        knots_u, knots_loss = [0.0], [0.0]
        probes = _probes((sensitivity or {}).get(name, 1.0), probe_keep_ratio)
        for ratio in sorted(probes, reverse=True):  # shallow cut first
            k = max(1, min(width - 1, round(ratio * width))) if width > 1 else 1
            u = float(lost[k])
            if u > knots_u[-1] + 1e-9:
                knots_u.append(u)
                knots_loss.append(max(float(probes[ratio]), knots_loss[-1]))
        if len(knots_u) == 1:
            knots_u.append(1.0)
            knots_loss.append(1.0)
        slope = (knots_loss[-1] - knots_loss[-2]) / (knots_u[-1] - knots_u[-2])
        knots_u.append(max(1.0, knots_u[-1]) + 1.0)
        knots_loss.append(knots_loss[-1] + slope * (knots_u[-1] - knots_u[-2]))
        curve = torch.from_numpy(np.interp(lost.numpy(), knots_u, knots_loss)).float()
        curves[name] = curve.clamp_min(0.0)
    return curves


def _per_channel(score: torch.Tensor, width: int) -> torch.Tensor:
    """Scores per kept channel: attention scores over q, k and v (3 x width) are summed per channel."""
    if score.numel() == width:
        return score
    if score.numel() == 3 * width:
        return score.view(3, width).sum(0)
    raise ToolchainError(f"scores have {score.numel()} entries for a group of {width} channels")


def build_problem(groups, scores: dict[str, torch.Tensor], latency: LatencyModel, round_to: int = 8,
                  min_keep_ratio: float = 0.1, sensitive_keep_ratio: float = 0.3,
                  sensitivity: Sensitivity | None = None, probe_keep_ratio: float = 0.5,
                  macs: Callable[[dict[str, int]], int] | None = None) -> AllocationProblem:
    """Allowed widths and loss curves for `groups` (graph ChannelGroups or anything with name/width/unit)."""
    worst = {name: max(_probes(v, probe_keep_ratio).values()) for name, v in (sensitivity or {}).items()}
    top = max(worst.values(), default=0.0)
    choices = []
    for g in groups:
        step = g.unit if g.unit > 1 else (round_to if g.width >= round_to else 1)
        share = worst.get(g.name, 0.0) / top if top > 0 else 0.0
        floor_ratio = max(min_keep_ratio, min_keep_ratio + (sensitive_keep_ratio - min_keep_ratio) * share)
        min_width = min(g.width, max(step, step * math.ceil(floor_ratio * g.width / step)))
        choices.append(GroupChoice(g.name, g.width, step, min_width))
    curves = loss_curves(scores, {g.name: g.width for g in groups}, sensitivity, probe_keep_ratio)
    return AllocationProblem(tuple(choices), curves, latency, scores, macs)


def greedy_repair(problem: AllocationProblem, widths: dict[str, int], budget_ms: float,
                  fill: bool = True) -> dict[str, int]:
    """Step groups down (least loss per ms saved) until the prediction meets the budget, then, with `fill`,
    step groups up (most loss recovered per ms spent) while it still does."""
    widths = dict(widths)
    index = {g.name: g.allowed() for g in problem.groups}
    current_ms = problem.predicted_ms(widths)
    while current_ms > budget_ms:
        moves = [(n, index[n][index[n].index(widths[n]) - 1]) for n in problem.names if widths[n] > index[n][0]]
        if not moves:
            raise ToolchainError(f"budget {budget_ms:.3f} ms is unreachable: the narrowest allowed model is "
                                 f"predicted at {current_ms:.3f} ms")
        latencies = problem.predicted_ms_many([{**widths, n: w} for n, w in moves])
        saved = [current_ms - ms for ms in latencies]
        costs = [float(problem.curves[n][w] - problem.curves[n][widths[n]]) for n, w in moves]
        if max(saved) > 0:
            best = max(range(len(moves)), key=lambda i: saved[i] / (costs[i] + 1e-9) if saved[i] > 0 else -1.0)
        else:
            best = max(range(len(moves)), key=lambda i: saved[i])
        widths[moves[best][0]] = moves[best][1]
        current_ms = latencies[best]
    while fill:
        moves = [(n, index[n][index[n].index(widths[n]) + 1]) for n in problem.names if widths[n] < index[n][-1]]
        if not moves:
            break
        latencies = problem.predicted_ms_many([{**widths, n: w} for n, w in moves])
        fits = [i for i, ms in enumerate(latencies) if ms <= budget_ms]
        if not fits:
            break
        gains = {i: float(problem.curves[moves[i][0]][widths[moves[i][0]]] - problem.curves[moves[i][0]][moves[i][1]])
                 for i in fits}
        best = max(fits, key=lambda i: gains[i] / max(latencies[i] - current_ms, 1e-9))
        widths[moves[best][0]] = moves[best][1]
        current_ms = latencies[best]
    return widths
