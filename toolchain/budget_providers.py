"""What a budget run needs from the target, injected: a latency predictor and a measurer.

`prune_to_budget` takes a `PredictorInfo` (widths -> predicted ms) and a `Measurer` (model, inputs -> measured
ms). `BudgetJob` and `run_sweep` find both through a `PredictorProvider` and a `Measurer` bundled as
`BudgetProviders`: by default those of the target (`toolchain.budget.target_providers`: an lpnet predictor
found or built on the fly, timings on the target under the measurement lock); tests and dry runs pass fakes.

>>> providers = BudgetProviders(predictor=lambda spec, dense, x, step: info, measurer=lambda model, x: 1.0,
...                             label="cpu/fake/1t")                                          # doctest: +SKIP
>>> BudgetJob(BudgetConfig(budget_ratio=0.5), providers=providers)                            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from toolchain.inputs import ModelInputs
from toolchain.latency.provision import PredictorInfo

Step = Callable[[str], None]


class Measurer(Protocol):
    """Times a model on the target: its latency in ms (by the target's statistic)."""

    def __call__(self, model: nn.Module, example_input: ModelInputs) -> float: ...


class PredictorProvider(Protocol):
    """The latency predictor for `dense` (named `model_spec`) on the target, found or built."""

    def __call__(self, model_spec: str, dense: nn.Module, example_input: ModelInputs, step: Step) -> PredictorInfo: ...


@dataclass(frozen=True)
class BudgetProviders:
    """Where a budget run gets its predictor and its timings, and the label its manifest gives that target."""

    predictor: PredictorProvider
    measurer: Measurer
    label: str


_ACTIVE: ContextVar[BudgetProviders | None] = ContextVar("budget_providers", default=None)


@contextmanager
def using_providers(providers: BudgetProviders) -> Iterator[BudgetProviders]:
    """Budget runs started inside this block whose job names no providers of its own use `providers`.

    For callers that cannot reach the `BudgetJob` they start: the CLI run in-process (tests), a notebook
    driving a board through its own timing harness.
    """
    token = _ACTIVE.set(providers)
    try:
        yield providers
    finally:
        _ACTIVE.reset(token)


def active_providers() -> BudgetProviders | None:
    """The providers set by the innermost `using_providers` block, if any."""
    return _ACTIVE.get()
