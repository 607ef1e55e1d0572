"""Which per-group width configurations a profiling campaign measures.

A mix, so a predictor sees the whole space a budget can reach: the dense model, uniform ratios (every group
at the same fraction), a scrambled Sobol sequence (space-filling) and random configurations around a random
global ratio (so small and large totals both occur). Half of the non-dense samples have widths rounded to a
multiple of 8, 16 or 32 (aligned), half are left where they fall (unaligned). Sample i depends only on
(seed, i): asking for more samples later keeps the first ones, which is what makes a campaign resumable.

Example:
    >>> configs = sample_width_configs(groups, n=300, seed=0, min_ratio=0.1)
    >>> configs[0]
    SampledConfig(tag='dense', widths={'conv1': 64, ...})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

ALIGN_MULTIPLES = (8, 16, 32)
UNIFORM_EVERY = 8  # one sample in UNIFORM_EVERY is a uniform-ratio configuration
# sample_tag prefix of a configuration an allocator produced (toolchain.latency.allocator_sampling), not sampled
ALLOCATOR_TAG = "alloc:"


class GroupLike(Protocol):
    name: str
    dense_width: int
    unit: int


@dataclass(frozen=True)
class SampledConfig:
    tag: str  # dense | uniform | sobol | random, with "+aligned<k>" when widths were rounded to k
    widths: dict[str, int]


def _width(ratio: float, group: GroupLike, min_ratio: float, align: int | None) -> int:
    """Width for `ratio` of the dense width: a whole number of units, >= the minimum, optionally aligned."""
    unit = max(group.unit, 1)
    dense_units = group.dense_width // unit
    min_units = max(1, int(np.ceil(min_ratio * dense_units)))
    units = int(np.clip(round(float(ratio) * dense_units), min_units, dense_units))
    if align:
        step = int(np.lcm(align, unit)) // unit  # alignment measured in channels, kept whole units
        if step * unit <= group.dense_width:
            units = int(np.clip(round(units / step) * step, step, (dense_units // step) * step))
    return units * unit


def sample_width_configs(
    groups: Sequence[GroupLike], n: int, seed: int = 0, min_ratio: float = 0.1
) -> list[SampledConfig]:
    """`n` configurations; the first is always the dense model."""
    if n < 1:
        return []
    from scipy.stats import qmc  # imported here: scipy.stats costs every CLI call 0.9 s at import

    sobol = qmc.Sobol(d=max(len(groups), 1), scramble=True, seed=seed)
    # Prefix-stable: point k is the same however many are drawn; drawn in a power of 2 as Sobol' wants.
    sobol_points = sobol.random_base2(max(int(np.ceil(np.log2(n))), 0))[:n]
    configs = [SampledConfig("dense", {g.name: g.dense_width for g in groups})]
    for i in range(1, n):
        rng = np.random.default_rng([seed, i])
        align = int(rng.choice(ALIGN_MULTIPLES)) if rng.random() < 0.5 else None
        if i % UNIFORM_EVERY == 1:
            kind = "uniform"
            ratios = np.full(len(groups), rng.uniform(min_ratio, 1.0))
        elif i % 2 == 0:
            kind = "sobol"
            ratios = min_ratio + (1.0 - min_ratio) * sobol_points[i]
        else:
            kind = "random"
            centre = rng.uniform(min_ratio, 1.0)
            ratios = np.clip(centre + rng.normal(0.0, rng.uniform(0.05, 0.3), len(groups)), min_ratio, 1.0)
        widths = {g.name: _width(r, g, min_ratio, align) for g, r in zip(groups, ratios, strict=True)}
        configs.append(SampledConfig(kind + (f"+aligned{align}" if align else ""), widths))
    return configs


def is_allocator_tag(tag: str) -> bool:
    """Whether a stored configuration's tag says an allocator produced it.

    >>> is_allocator_tag("alloc:knapsack:r8:b0.50"), is_allocator_tag("sobol+aligned8")
    (True, False)
    """
    return tag.startswith(ALLOCATOR_TAG)


def layer_grid_ratios(levels: int) -> list[float]:
    """Channel ratios of the single-op lookup grid, e.g. levels=5 -> [0.1, 0.325, 0.55, 0.775, 1.0]."""
    return [float(r) for r in np.linspace(0.1, 1.0, levels)] if levels > 1 else [1.0]
