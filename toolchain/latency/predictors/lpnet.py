"""`lpnet`: the latency-prediction network of W-Gates (Li et al., 2020), one per architecture and target.

An MLP maps the normalised per-group width vector (width / dense width, in the artifact's group order) to
latency. `LPNet.forward` is differentiable in the widths, which is what a gradient-based width allocator
needs.

On top of the paper's MLP it carries a structured prior, because an MLP alone over 20-odd widths overfits a
few hundred measurements (held-out error 3-4x the training error on this project's benchmark): latency is
close to a non-negative sum over the model's layers of work terms (MACs, output elements), each split by
whether its channel counts are aligned to the kernels' vector width (unaligned channels fall off the fast
NCHWc / packed-GEMM paths), and, for MACs, to half of it: on onnxruntime's CPU kernels channel counts off a
multiple of 4 cost more again (without that term MobileNet-V2 configurations with unaligned widths missed by
up to 35%; with it 5-fold cross-validation went from 89% to 97% within ±10%). Each layer's channel counts are
a linear function of the group widths, learnt exactly from the measured configurations (identity, a multiple
after a flatten, a sum after a concat, or a constant), so the prior is a closed-form function of the width
vector. The prior's weights are solved by non-negative least squares on relative error, reweighted with
Huber weights so that measurements taken while the machine drifted (neighbouring measurements share a few
percent of error) count linearly. The MLP ensemble then learns the log-ratio between measurement and prior
(interactions the sum cannot express), with weight decay keeping it small; it is kept only where it helps
held-back training configurations (on the CPU benchmarks it does not: the prior alone predicts).

Example:
    >>> predictor = load_predictor("toolchain/latency/artifacts/resnet18-cpu-onnxruntime-lpnet")
    >>> net = predictor.module                       # torch nn.Module
    >>> x = predictor.normalise(widths).requires_grad_()
    >>> net(x).backward()                            # d latency_ms / d normalised widths in x.grad
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from toolchain.errors import OutdatedArtifactError, ToolchainError
from toolchain.latency.features import COMPUTE_OPS
from toolchain.latency.predictors import LatencyPredictor, LatencyQuery, register_predictor
from toolchain.threads import torch_threads

HIDDEN_UNITS = 64
ENSEMBLE_SIZE = 3
ALIGNMENT_PERIOD = 8  # channel multiple the target's kernels favour (NCHWc8 on AVX2 CPUs)
GATE_SHARPNESS = 16  # gate = ((1 + cos(2*pi*c/p)) / 2) ** sharpness: 1 at multiples of p, < 0.08 one channel off
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-1
SIDES = ("in_channels", "out_channels", "groups")
VALIDATION_EVERY = 5  # every 5th training configuration checks the residual MLP (early stopping)
N_PRIOR_TERMS = 10  # per-layer terms of `LPNet.prior_features`; part of the artifact format
# Huber weights for the prior's least squares: configurations off by more than this share count linearly, not
# quadratically, so a few measurements taken while the machine drifted do not pull the weights.
HUBER_RELATIVE_ERROR = 0.05
HUBER_ROUNDS = 5
CHECK_EVERY = 25  # optimiser steps between checks
# The residual replaces the prior alone only where it cuts the validation loss by this share: a smaller gain on
# one fifth of a few hundred configurations is as likely chance as signal (on the benchmark it did not carry
# over to the held-out configurations).
RESIDUAL_MIN_GAIN = 0.10


def _mlp(n_inputs: int, hidden_units: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_inputs, hidden_units),
        nn.SiLU(),
        nn.Linear(hidden_units, hidden_units),
        nn.SiLU(),
        nn.Linear(hidden_units, 1),
    )


def alignment_gate(channels: torch.Tensor, period: float = ALIGNMENT_PERIOD) -> torch.Tensor:
    """Smooth, differentiable indicator of `channels` being a multiple of `period`.

    >>> [round(float(v), 3) for v in alignment_gate(torch.tensor([8.0, 9.0, 12.0]))]
    [1.0, 0.076, 0.0]
    """
    return ((1 + torch.cos(2 * math.pi * channels / period)) / 2) ** GATE_SHARPNESS


def fit_channel_maps(queries: list[LatencyQuery], group_names: tuple[str, ...],
                     dense_widths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per layer and side (in/out channels, conv groups), the affine map from group widths to channels.

    Least squares over the measured configurations: `channels = offset + coef @ group_widths` holds exactly
    for identity, flatten (a multiple), concat (a sum) and unpruned layers (a constant).
    """
    n_layers = {len(q.layers) for q in queries}
    if len(n_layers) != 1:
        raise ToolchainError(f"lpnet needs one layer list per architecture; the measurements have {sorted(n_layers)}")
    widths = np.array([[q.widths.get(name, dense) for name, dense in zip(group_names, dense_widths, strict=True)]
                       for q in queries], dtype=np.float64)
    design = np.concatenate([np.ones((len(queries), 1)), widths], axis=1)
    maps = {}
    for side in SIDES:
        channels = np.array([[getattr(layer, side) for layer in q.layers] for q in queries], dtype=np.float64)
        solution = np.linalg.lstsq(design, channels, rcond=None)[0]  # [1 + groups, layers]
        solution[np.abs(solution) < 1e-6] = 0.0
        maps[f"{side}_offset"] = torch.tensor(solution[0], dtype=torch.float32)
        maps[f"{side}_coef"] = torch.tensor(solution[1:].T, dtype=torch.float32)  # [layers, groups]
    layers = queries[0].layers
    maps["kernel_area"] = torch.tensor([layer.kernel**2 for layer in layers], dtype=torch.float32)
    maps["in_area"] = torch.tensor([layer.in_h * layer.in_w for layer in layers], dtype=torch.float32)
    maps["out_area"] = torch.tensor([layer.out_h * layer.out_w for layer in layers], dtype=torch.float32)
    maps["is_compute"] = torch.tensor([layer.op in COMPUTE_OPS for layer in layers], dtype=torch.float32)
    return maps


class LPNet(nn.Module):
    """Normalised widths [..., n_groups] -> latency in ms [...]: structured prior x exp(MLP ensemble).

    The MLPs read the widths and each group's alignment gate; members trained from different seeds are
    averaged in log space, which steadies predictions between the measured configurations.
    """

    def __init__(self, dense_widths: tuple[int, ...], n_layers: int, hidden_units: int = HIDDEN_UNITS,
                 ensemble_size: int = ENSEMBLE_SIZE):
        super().__init__()
        n_groups = len(dense_widths)
        self.register_buffer("dense_widths", torch.tensor(dense_widths, dtype=torch.float32))
        for side in SIDES:
            self.register_buffer(f"{side}_offset", torch.zeros(n_layers))
            self.register_buffer(f"{side}_coef", torch.zeros(n_layers, n_groups))
        for name in ("kernel_area", "in_area", "out_area", "is_compute"):
            self.register_buffer(name, torch.zeros(n_layers))
        self.register_buffer("prior_weights", torch.zeros(N_PRIOR_TERMS * n_layers + 1))
        self.members = nn.ModuleList(_mlp(2 * n_groups, hidden_units) for _ in range(ensemble_size))

    def channels(self, group_channels: torch.Tensor, side: str) -> torch.Tensor:
        return getattr(self, f"{side}_offset") + group_channels @ getattr(self, f"{side}_coef").T

    def prior_features(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        """[..., N_PRIOR_TERMS * n_layers + 1], per layer: MACs; MACs with input / output channels off a
        multiple of the vector width, off twice the vector width, and off half of it (4: the SSE-width tails
        of the NCHW GEMM / depthwise kernels); output elements, those unaligned; unaligned input elements
        (layout reorders). Then a constant. Scaled to O(1) numbers for the solver."""
        group_channels = normalised_widths * self.dense_widths
        c_in, c_out = self.channels(group_channels, "in_channels"), self.channels(group_channels, "out_channels")
        c_groups = self.channels(group_channels, "groups").clamp_min(1.0)
        macs = self.is_compute * c_in * c_out / c_groups * self.kernel_area * self.out_area / 1e6
        outputs, inputs = c_out * self.out_area / 1e4, c_in * self.in_area / 1e4
        off_in, off_out = 1 - alignment_gate(c_in), 1 - alignment_gate(c_out)
        off2_in = 1 - alignment_gate(c_in, 2 * ALIGNMENT_PERIOD)
        off2_out = 1 - alignment_gate(c_out, 2 * ALIGNMENT_PERIOD)
        half_in = 1 - alignment_gate(c_in, ALIGNMENT_PERIOD / 2)
        half_out = 1 - alignment_gate(c_out, ALIGNMENT_PERIOD / 2)
        terms = [macs, macs * off_in, macs * off_out, macs * off2_in, macs * off2_out, macs * half_in,
                 macs * half_out, outputs, outputs * off_out, inputs * off_in]
        return torch.cat([*terms, torch.ones_like(normalised_widths[..., :1])], dim=-1)

    def macs(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        """MACs of the compute layers at these widths, from the channel maps learnt from measured configurations
        (exact where those are: conv / linear channels are affine in the group widths)."""
        group_channels = normalised_widths * self.dense_widths
        c_in, c_out = self.channels(group_channels, "in_channels"), self.channels(group_channels, "out_channels")
        c_groups = self.channels(group_channels, "groups").clamp_min(1.0)
        return (self.is_compute * c_in * c_out / c_groups * self.kernel_area * self.out_area).sum(-1)

    def prior_ms(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return (self.prior_features(normalised_widths) @ self.prior_weights).clamp_min(1e-6)

    def mlp_inputs(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        gates = alignment_gate(normalised_widths * self.dense_widths)
        return torch.cat([normalised_widths, gates], dim=-1)

    def member_log_ms(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        """[ensemble, ...] log-latency of each member."""
        inputs = self.mlp_inputs(normalised_widths)
        residual = torch.stack([mlp(inputs).squeeze(-1) for mlp in self.members])
        return torch.log(self.prior_ms(normalised_widths)) + residual

    def log_ms(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return self.member_log_ms(normalised_widths).mean(0)

    def forward(self, normalised_widths: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_ms(normalised_widths))


def _zero_last_layers(net: LPNet) -> None:
    """Start every member at residual 0 (the prior alone)."""
    for mlp in net.members:
        nn.init.zeros_(mlp[-1].weight)
        nn.init.zeros_(mlp[-1].bias)


@register_predictor
class LPNetPredictor(LatencyPredictor):
    name = "lpnet"
    single_architecture = True
    train_steps = 2000

    def __init__(self, meta):
        super().__init__(meta)
        self.module = LPNet(tuple(meta.dense_widths) or (1,), n_layers=1)

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
        measured_ms = torch.tensor([q.measured_ms for q in train], dtype=torch.float64)
        with torch_threads(1):
            torch.manual_seed(0)
            self.module = LPNet(self.meta.dense_widths, n_layers=len(train[0].layers))
            for name, tensor in fit_channel_maps(train, self.group_names, self.meta.dense_widths).items():
                getattr(self.module, name).copy_(tensor)
            self._fit_prior(inputs, measured_ms)
            self._train_residual(inputs, torch.log(measured_ms).float())

    def _fit_prior(self, inputs: torch.Tensor, measured_ms: torch.Tensor) -> None:
        """Non-negative least squares on relative error (rows divided by the measurement, target 1), reweighted
        a few rounds with Huber weights so that outlying measurements count linearly."""
        with torch.no_grad():
            features = self.module.prior_features(inputs).double()
        relative = (features / measured_ms[:, None]).numpy()
        from scipy.optimize import nnls  # imported here: scipy costs every CLI call 0.9 s at import

        row_weights = np.ones(len(measured_ms))
        for _ in range(HUBER_ROUNDS + 1):
            scale = np.sqrt(row_weights)
            weights, _ = nnls(relative * scale[:, None], scale, maxiter=50 * relative.shape[1])
            error = np.abs(relative @ weights - 1)
            row_weights = np.minimum(1.0, HUBER_RELATIVE_ERROR / np.maximum(error, 1e-12))
        self.module.prior_weights.copy_(torch.tensor(weights, dtype=torch.float32))

    def _train_residual(self, inputs: torch.Tensor, target_log_ms: torch.Tensor) -> None:
        """Train the MLPs on the log-ratio to the prior, with early stopping on a fifth of the training
        configurations held back: the residual is kept only as far as it clearly helps configurations it did
        not see (on this project's CPU benchmarks it did not, and stayed at zero: the prior alone predicts)."""
        _zero_last_layers(self.module)
        validation = torch.arange(len(inputs)) % VALIDATION_EVERY == 0
        with torch.no_grad():
            log_prior = torch.log(self.module.prior_ms(inputs))
            mlp_inputs = self.module.mlp_inputs(inputs)

        def member_losses(rows: torch.Tensor) -> torch.Tensor:
            residual = torch.stack([mlp(mlp_inputs[rows]).squeeze(-1) for mlp in self.module.members])
            return torch.mean((log_prior[rows] + residual - target_log_ms[rows]) ** 2)

        optimizer = torch.optim.AdamW(self.module.members.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.train_steps)
        best_loss, best_state = float("inf"), None
        for step in range(self.train_steps + 1):
            if step % CHECK_EVERY == 0 or step == self.train_steps:
                with torch.no_grad():
                    validation_loss = float(member_losses(validation))
                if validation_loss < best_loss * (1 - RESIDUAL_MIN_GAIN if step > 0 else 1):
                    best_loss, best_state = validation_loss, copy.deepcopy(self.module.members.state_dict())
            if step == self.train_steps:
                break
            optimizer.zero_grad()
            # Each member fits the data on its own (mean of the members' losses, not loss of the mean).
            member_losses(~validation).backward()
            optimizer.step()
            schedule.step()
        self.module.members.load_state_dict(best_state)
        self.module.eval()

    def predict_many(self, queries: list[LatencyQuery]) -> list[float]:
        with torch.no_grad():
            return [float(v) for v in self.module(self._inputs(queries))]

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.module.state_dict())

    def params(self) -> dict:
        return {
            "hidden_units": HIDDEN_UNITS,
            "alignment_period": ALIGNMENT_PERIOD,
            "ensemble_size": len(self.module.members),
            "n_layers": int(self.module.kernel_area.numel()),
            "prior_terms": N_PRIOR_TERMS,
        }

    def load_state(self, params: dict, tensors: dict[str, torch.Tensor]) -> None:
        if "n_layers" not in params:
            raise OutdatedArtifactError("this lpnet artifact predates the structured prior; refit it with "
                                        "`toolchain fit`")
        if params.get("prior_terms") != N_PRIOR_TERMS:
            raise OutdatedArtifactError(f"this lpnet artifact has {params.get('prior_terms', 8)} prior terms per "
                                        f"layer, this version {N_PRIOR_TERMS}; refit it with `toolchain fit`")
        self.module = LPNet(
            self.meta.dense_widths,
            n_layers=params["n_layers"],
            hidden_units=params["hidden_units"],
            ensemble_size=params["ensemble_size"],
        )
        self.module.load_state_dict(tensors)
        self.module.eval()
