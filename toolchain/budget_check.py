"""The joint calibration check of an allocator's proposal, and the exchange search that refines the winner.

The allocators optimise a per-group (additive) loss model; pruning all groups at once interacts. So the
proposal is compared, on the loss of the masked model over calibration data, with the uniform allocation,
blends of the two and one global score threshold, all fitted to the same predicted latency.

>>> widths, check = calibration_check(problem, proposal, target_ms, joint_loss, rounds=2)   # doctest: +SKIP
>>> check["chosen"], check["losses"][check["chosen"]] == min(check["losses"].values())      # doctest: +SKIP
('0.75', True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from toolchain.allocate import AllocationProblem, allocate, greedy_repair
from toolchain.allocate.macs import global_ranking
from toolchain.evaluate import mean_loss
from toolchain.recover import RecoveryConfig, distill, recalibrate_batchnorm

JointLoss = Callable[[dict[str, int]], float]

# Allocators whose proposal is checked against blends with the uniform allocation on calibration loss.
CHECKED_ALLOCATORS = ("lpnet", "knapsack")
BLENDS = (1.0, 0.75, 0.5, 0.25, 0.0)  # weight of the allocator's proposal; 0.0 is the uniform allocation
GLOBAL = "global"  # the candidate kept by one global score threshold


def calibration_check(problem: AllocationProblem, proposal: dict[str, int], target_ms: float,
                      joint_loss: JointLoss, rounds: int) -> tuple[dict[str, int], dict]:
    """The widths with the lowest joint calibration loss among the proposal, the uniform allocation, blends of
    the two and a global score threshold (each fitted to `target_ms` predicted), refined by `_exchange`; and
    what the check saw (the manifest's `calibration_check`)."""
    uniform = allocate("uniform", problem, target_ms)
    candidates: dict[str, dict[str, int]] = {}
    for weight in BLENDS:
        blend = {g.name: g.round(weight * proposal[g.name] + (1 - weight) * uniform[g.name]) for g in problem.groups}
        candidates[str(weight)] = greedy_repair(problem, blend, target_ms, fill=False)
    # One global score threshold fitted to the predicted latency: the latency-aware form of what a
    # global-pruning tool does, so the choice is never worse on calibration loss than that habit either.
    candidates[GLOBAL] = greedy_repair(problem, global_ranking(problem, lambda w: problem.predicted_ms(w) <= target_ms),
                                       target_ms, fill=True)
    losses = {name: joint_loss(widths) for name, widths in candidates.items()}
    best = min(losses, key=losses.get)  # ties: the first inserted, i.e. the most of the proposal, global last
    refined, refined_loss, exchanges = _exchange(problem, candidates[best], losses[best], target_ms, joint_loss,
                                                 rounds)
    return refined, {"proposal_weight": float(best) if best != GLOBAL else None, "chosen": best,
                     "losses": {name: round(v, 4) for name, v in losses.items()},
                     "exchanges": exchanges, "refined_loss": round(refined_loss, 4)}


def loss_after_recovery(build: Callable[[dict[str, int]], nn.Module], dense: nn.Module, data,
                        recovery: RecoveryConfig, steps: int) -> JointLoss:
    """A `JointLoss` that scores widths as recovery would leave them: a pruned copy (`build(widths)`), its
    BatchNorm re-calibrated, `steps` distillation steps from `dense` on the train split, then its mean loss on
    the calibration split (held apart from the steps). Memoised per widths: a search asks again.

    The masked model's loss before any training ranks width choices by what they keep before recovery; where
    recovery changes the order (deep cuts of a coupled group recover less), this ranks them by what is shipped.
    """
    seen: dict[tuple, float] = {}

    def loss(widths: dict[str, int]) -> float:
        key = tuple(sorted(widths.items()))
        if key not in seen:
            seen[key] = recovered_loss(build(widths), dense, data, recovery, steps)
        return seen[key]

    return loss


def recovered_loss(model: nn.Module, dense: nn.Module, data, recovery: RecoveryConfig, steps: int) -> float:
    """`model` (trained in place: pass a copy) BatchNorm re-calibrated and distilled from `dense` for `steps` steps
    on the train split; its mean loss on the calibration split."""
    recalibrate_batchnorm(model, data.calib)
    distill(model, dense, data.train, data.calib, replace(recovery, finetune_steps=steps, distill=True))
    return mean_loss(model, data.calib)


def _exchange(problem: AllocationProblem, widths: dict[str, int], loss: float, target_ms: float,
              joint_loss: JointLoss, rounds: int) -> tuple[dict[str, int], float, int]:
    """Local search on the joint calibration loss: widen the group whose step up buys the most loss per ms,
    pay for it by narrowing the groups whose step down costs least per ms, keep it if the loss fell."""
    allowed = {g.name: g.allowed() for g in problem.groups}
    exchanges = 0
    for _ in range(rounds):
        current_ms = problem.predicted_ms(widths)
        ups = {n: {**widths, n: allowed[n][allowed[n].index(w) + 1]} for n, w in widths.items() if w < allowed[n][-1]}
        downs = {n: {**widths, n: allowed[n][allowed[n].index(w) - 1]} for n, w in widths.items() if w > allowed[n][0]}
        if not ups or not downs:
            break
        up_gain = {n: (loss - joint_loss(c)) / max(problem.predicted_ms(c) - current_ms, 1e-9) for n, c in ups.items()}
        down_cost = {n: (joint_loss(c) - loss) / max(current_ms - problem.predicted_ms(c), 1e-9)
                     for n, c in downs.items()}
        widened = max(up_gain, key=up_gain.get)
        candidate = dict(ups[widened])
        for name in sorted(down_cost, key=down_cost.get):
            if problem.predicted_ms(candidate) <= target_ms:
                break
            if name != widened:
                candidate[name] = downs[name][name]
        if problem.predicted_ms(candidate) > target_ms:
            candidate = greedy_repair(problem, candidate, target_ms, fill=False)
        candidate_loss = joint_loss(candidate)
        if candidate_loss >= loss:
            break
        widths, loss, exchanges = candidate, candidate_loss, exchanges + 1
    return widths, loss, exchanges
