"""The latency predictor corrected by the budget search's own measurements.

An allocator that optimises accuracy against a predicted latency is drawn to the configurations the
predictor under-rates (BENCHMARKS.md: on ResNet-56 the widths `lpnet` chose were predicted a median 27 %
below what they measured, against -1 to +4 % for uniform widths). One refit on extra samples does not stop
that: the allocator finds the next optimistic corner. Here every configuration the search has measured
becomes evidence before the next allocation: the predictor's error is modelled as linear in how much of
each group is pruned,

    measured(w) - predicted(w) = sum_g beta_g * (1 - w_g / dense_g)

i.e. each group's latency saving per pruned share is off by beta_g (latency is close to a sum of per-layer
costs, and a predictor that mis-rates a layer's cost mis-rates it in every configuration that cuts it),
fitted by ridge regression with beta_g >= 0. It is zero at the dense model (whose measurement calibrates the
predictor anyway), reproduces the measured tries up to the ridge, and spreads each miss over the groups that
try pruned. So the next allocation moves its cuts towards groups whose predicted savings have not been
contradicted, instead of re-choosing the same corner.

Why only beta_g >= 0 (a correction can make a group's cut save less than predicted, never more): the
allocators exploit whatever says a cut is cheap. Unconstrained, two tries that differ in a few groups put
negative coefficients on groups neither try measured alone; on ResNet-56 `knapsack` then cut those groups
to their floors, landed on its predicted latency, and lost 30-50 points of accuracy (seed 1, budgets 0.5
and 0.65). An over-pessimistic prediction costs a little accuracy and is caught by the measured search (the
target is re-aimed through the try closest to the aim); an over-optimistic one is what the allocator seeks.

>>> import torch
>>> class Flat:                      # a predictor that thinks every configuration takes 1 ms
...     differentiable = True
...     def ms_batch(self, widths): return torch.ones(widths.shape[0])
>>> dense = torch.tensor([8.0, 8.0])
>>> corrected = MeasuredCorrection.fit(Flat(), dense, [(torch.tensor([4.0, 8.0]), 1.5)])
>>> [round(float(ms), 2) for ms in corrected.ms_batch(torch.tensor([[8.0, 8.0], [4.0, 8.0], [8.0, 4.0]]))]
[1.0, 1.48, 1.0]
"""

from __future__ import annotations

import math

import numpy as np
import torch

from toolchain.allocate._problem import LatencyModel

# Ridge, as a share of the tries' mean squared feature norm: small enough that a measured try is reproduced
# within ~5 %, large enough that two tries one group step apart with timings differing by noise do not put a
# large coefficient on that one group.
RIDGE = 0.05
# Bound on the corrected / predicted ratio: a linear model extrapolated far from the tries (the narrowest model
# from tries near dense) must not claim a factor beyond e ~ 2.7x.
MAX_FACTOR = math.e


class MeasuredCorrection:
    """`base` latency plus a correction fitted on measured tries; a LatencyModel (differentiable if `base` is).

    `dense` holds each group's dense width (problem order); `beta` the fitted coefficients (>= 0).
    """

    def __init__(self, base: LatencyModel, dense: torch.Tensor, beta: torch.Tensor):
        self.base, self.dense, self.beta = base, dense, beta
        self.differentiable = base.differentiable

    @classmethod
    def fit(cls, base: LatencyModel, dense: torch.Tensor, measured: list[tuple[torch.Tensor, float]],
            ridge: float = RIDGE) -> MeasuredCorrection:
        """Fit on `measured`: (widths vector in problem order, measured ms on the predictor's scale) pairs."""
        if not measured:
            return cls(base, dense, torch.zeros_like(dense))
        widths = torch.stack([w.float() for w, _ in measured])
        with torch.no_grad():
            predicted = base.ms_batch(widths).double()
        target = torch.tensor([ms for _, ms in measured], dtype=torch.float64) - predicted
        features = _pruned_share(widths, dense).double()
        scale = float((features * features).sum(dim=1).mean())
        if scale <= 0:  # only dense configurations measured: nothing to correct
            return cls(base, dense, torch.zeros_like(dense))
        # min |features beta - target|^2 + ridge * scale * |beta|^2 subject to beta >= 0, as one non-negative
        # least-squares problem on the system stacked with sqrt(ridge * scale) * identity.
        n_groups = features.shape[1]
        system = np.vstack([features.numpy(), math.sqrt(ridge * scale) * np.eye(n_groups)])
        from scipy.optimize import nnls  # imported here: scipy costs every CLI call 0.9 s at import

        beta, _ = nnls(system, np.concatenate([target.numpy(), np.zeros(n_groups)]))
        return cls(base, dense, torch.from_numpy(beta).float())

    def ms_batch(self, widths: torch.Tensor) -> torch.Tensor:
        base = self.base.ms_batch(widths)
        return torch.minimum(base + _pruned_share(widths, self.dense) @ self.beta, base * MAX_FACTOR)


def _pruned_share(widths: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    return 1.0 - widths / dense.clamp_min(1e-9)
