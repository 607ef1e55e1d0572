"""One try of the budget search: widths proposed, the pruned model built and timed, the verdict.

A `Trial` is what the search proposes (`BudgetSearch.propose`), fills in when it times the model (`measure`)
and judges against the band (`observe`); `record()` is what the manifest keeps of it, one entry of
`manifest["iterations"]`.

>>> trial = Trial({"stem.0": 16}, "refined", aim_ms=0.95, predictor_ms=0.6, predicted_ms=0.9)
>>> trial.measured_ms, trial.outcome = 0.93, outcome_of(0.93, budget_ms=1.0, lower_ratio=0.9)
>>> trial.record()
{'target_predicted_ms': 0.95, 'predicted_ms': 0.9, 'measured_ms': 0.93, 'refined': True}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolchain.pruning import PruneResult

# Where a trial's widths came from: "allocator:<name>" (the allocator, for the current internal target),
# "narrowest" (the prediction says only the narrowest model can meet the budget), or one of the searches that
# replace the allocator once measurements exist. The manifest flags those searches by name (`"refined": true`).
NARROWEST = "narrowest"
BRACKETED = "bracketed"  # between a model measured below the band and one above it (budget_search.between_measured)
REFINED = "refined"  # groups stepped next to the measured model closest to the aim (budget_search.refinement)
NEIGHBOUR = "neighbour"  # the nearest untried neighbour of an allocation measured before (nearest_untried)
# The allocator again, on the predictor corrected by the tries measured so far (BudgetConfig.correct_predictor).
CORRECTED = "corrected"
SEARCHES = (BRACKETED, REFINED, NEIGHBOUR, CORRECTED)

# A trial's verdict: within the band [lower_ratio, 1] x budget (met), above the budget (over), below the band
# (under: meets the budget, but leaves accuracy on the table), or over budget at the narrowest allowed widths.
MET, OVER, UNDER, UNREACHABLE = "met", "over", "under", "unreachable"


def allocator_origin(allocator: str) -> str:
    return f"allocator:{allocator}"


def outcome_of(measured_ms: float, budget_ms: float, lower_ratio: float) -> str:
    """The verdict on a measured latency, before the narrowest-model check (`BudgetSearch.observe`).

    >>> [outcome_of(ms, 1.0, 0.9) for ms in (0.85, 0.95, 1.05)]
    ['under', 'met', 'over']
    """
    if measured_ms > budget_ms:
        return OVER
    return MET if measured_ms >= lower_ratio * budget_ms else UNDER


@dataclass
class Trial:
    """Widths tried by the budget search, with the prediction that chose them and, once timed, the verdict.

    Latencies are in measured ms unless named `predictor_ms` (the predictor's own scale: a predictor fitted
    on another statistic or host is calibrated to the target by the dense model's measured/predicted ratio).
    """

    widths: dict[str, int]
    origin: str  # see NARROWEST, SEARCHES, allocator_origin
    aim_ms: float  # the internal target the widths were chosen for
    predictor_ms: float
    predicted_ms: float
    calibration_check: dict | None = None  # the joint-loss check of an allocator's proposal (budget_check)
    timings_ms: list[float] = field(default_factory=list)  # every timing of this model, in order
    measured_ms: float | None = None  # the lowest timing of these widths, this trial's and earlier trials'
    run_stats: dict | None = None  # min/median/p90 and number of the timed runs behind `measured_ms`, if known
    outcome: str | None = None  # MET, OVER, UNDER or UNREACHABLE once observed
    result: PruneResult | None = field(default=None, repr=False)  # the pruned model, once built

    def record(self) -> dict:
        """The manifest's entry for this trial (`manifest["iterations"][i]`)."""
        return {"target_predicted_ms": round(self.aim_ms, 4), "predicted_ms": round(self.predicted_ms, 4),
                "measured_ms": round(self.measured_ms, 4),
                **({"calibration_check": self.calibration_check} if self.calibration_check else {}),
                **({self.origin: True} if self.origin in SEARCHES else {})}
