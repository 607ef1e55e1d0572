"""A synthetic, differentiable latency model for allocator tests: a constant, a per-channel cost per
group and a product term between consecutive groups (a convolution costs in x out)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from toolchain.allocate import build_problem


@dataclass(frozen=True)
class Group:
    name: str
    width: int
    unit: int = 1


GROUPS = (Group("stem", 16), Group("block1", 32), Group("block2", 64), Group("head", 24))


class SyntheticLatency:
    differentiable = True

    def __init__(self, base_ms: float = 0.1, per_channel_ms=(0.004, 0.002, 0.003, 0.001), product_ms: float = 1e-4):
        self.base_ms = base_ms
        self.per_channel_ms = torch.tensor(per_channel_ms)
        self.product_ms = product_ms

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        products = (widths[:, :-1] * widths[:, 1:]).sum(dim=1)
        return self.base_ms + widths @ self.per_channel_ms + self.product_ms * products


def synthetic_problem(seed: int = 0, sensitivity=None, macs=None, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    scores = {g.name: torch.rand(g.width, generator=generator) * (i + 1) for i, g in enumerate(GROUPS)}
    return build_problem(GROUPS, scores, SyntheticLatency(), sensitivity=sensitivity, macs=macs, **kwargs)


def synthetic_macs(widths: dict[str, int]) -> int:
    order = [g.name for g in GROUPS]
    return 1 * widths[order[0]] + sum(widths[a] * widths[b] for a, b in zip(order, order[1:]))
