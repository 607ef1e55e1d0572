"""Recovery after shrinking: BatchNorm re-calibration (cheap, always) and distillation from the dense model.

Removing channels shifts the statistics each BatchNorm sees; re-estimating running mean and variance on a few
calibration batches recovers part of the lost accuracy with no training. Where the data has a train split,
distillation from the dense model recovers most of the rest, bounded by time (`RecoveryConfig.seconds`) or,
for sweeps that give every method equal recovery, by a fixed number of steps (`finetune_steps`). `recover` is
the one place both ratio and budget pruning recover a model.

>>> done = recover(result.model, dense, load_mnist5k(), RecoveryConfig(seconds=30))   # doctest: +SKIP
>>> done["recovery"]["stop_reason"], done["accuracy_before_recovery"] <= done["accuracy"]  # doctest: +SKIP
('reached the dense model's calibration accuracy', True)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from toolchain.errors import ToolchainError
from toolchain.evaluate import accuracy
from toolchain.threads import torch_threads

# Default distillation time bound. On the shared 2-vCPU development machine one distillation step of the pruned
# demo (batch 64, one thread, teacher logits cached) takes ~0.1 s of CPU and 0.1-0.3 s of wall time depending
# on load; 90 s is enough for the demo at half its latency to come back to within ~0.3 points of the dense
# model (BENCHMARKS.md), and keeps `make deploy` (profile + fit + prune + recover + export) under 4 minutes.
DEFAULT_RECOVER_SECONDS = 90.0
MAX_CACHED_LOGITS = 50_000_000  # teacher outputs kept in memory at most (200 MB of float32)
OnProgress = Callable[[float, float, str], None]  # (done, total, what): seconds (or steps) done of the bound

# Why a distillation ended (the manifest's `recovery.stop_reason`).
REACHED_DENSE = "reached the dense model's calibration accuracy"
PLATEAU = "calibration accuracy stopped improving"
TIME_LIMIT = "time limit"
STEPS_DONE = "fixed number of steps done"
TURNED_OFF = "turned off (BatchNorm re-calibration only)"
NO_TRAIN_SPLIT = "the data has no train split (BatchNorm re-calibration only)"
EMPTY_TRAIN_SPLIT = "the train split is empty"


@dataclass(frozen=True)
class RecoveryConfig:
    """How a pruned model is recovered: BatchNorm re-calibration always, then distillation from the dense model.

    Bounded by `seconds` of wall time (default), or by exactly `finetune_steps` steps when that is given (no
    time bound, no early stop: equal recovery for every method of a sweep; 0 is BatchNorm re-calibration only).

    >>> RecoveryConfig().mode, RecoveryConfig(finetune_steps=300).mode, RecoveryConfig(distill=False).mode
    ('seconds', 'steps', 'off')
    """

    finetune_steps: int | None = None  # fixed distillation steps; None: bounded by `seconds`
    seconds: float = DEFAULT_RECOVER_SECONDS  # wall-clock bound of the distillation (evaluations included)
    distill: bool = True  # False: the low-data regime, BatchNorm re-calibration only (`--no-recover`)
    max_lr: float = 3e-3  # Adam, one-cycle: warm-up over the first 10%, cosine decay to 0 by the bound
    batch_size: int = 64
    temperature: float = 4.0
    threads: int = 1  # torch threads while training (on a busy 2-core host two threads run slower than one)
    eval_every: int = 25  # steps between calibration-accuracy checks (early stop, best weights kept)
    patience: int = 4  # checks without improvement before stopping on a plateau (time-bounded runs only)
    # Share of the time bound before an early stop (plateau or dense accuracy reached) may end the run. Early on
    # the learning rate is near its peak and calibration accuracy moves by noise (500 demo images: 0.2 points
    # each): on the demo at half its latency, 5 seeds kept 97.6-98.4 % with early stops from the first check and
    # 98.2-98.7 % with this rule (BENCHMARKS.md, "`make deploy` on a fresh clone: recovery by default").
    early_stop_after: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.finetune_steps is not None and self.finetune_steps < 0:
            raise ToolchainError(f"finetune steps must be >= 0, got {self.finetune_steps}")
        if not self.seconds >= 0:
            raise ToolchainError(f"--recover-seconds must be >= 0, got {self.seconds}")
        if self.batch_size < 1 or self.eval_every < 1 or self.patience < 1 or self.threads < 1:
            raise ToolchainError("batch_size, eval_every, patience and threads must be >= 1")
        if not 0.0 <= self.early_stop_after <= 1.0:
            raise ToolchainError(f"early_stop_after must be in [0, 1], got {self.early_stop_after}")

    @property
    def mode(self) -> str:
        """"off" (BatchNorm only), "steps" (fixed steps) or "seconds" (time-bounded, early stop)."""
        if not self.distill or self.finetune_steps == 0 or (self.finetune_steps is None and self.seconds == 0):
            return "off"
        return "steps" if self.finetune_steps is not None else "seconds"


def recover(pruned: nn.Module, dense: nn.Module, data, config: RecoveryConfig = RecoveryConfig(),
            step: Callable[[str], None] = lambda _: None, on_progress: OnProgress | None = None) -> dict:
    """Recover `pruned` in place on `data` (train/calib/test splits) and return what was done, as manifest
    fields: the dense and pruned test accuracies before and after each recovery step, the distillation steps
    taken (`finetune_steps`) and `recovery` (mode, seconds, steps, stop reason, calibration accuracies).
    `accuracy` is the final one."""
    step("re-calibrating BatchNorm and evaluating")
    done = {"dense_accuracy": accuracy(dense, data.test), "accuracy_before_recovery": accuracy(pruned, data.test)}
    recalibrate_batchnorm(pruned, data.calib)
    done["accuracy"] = done["accuracy_after_bn_recalibration"] = accuracy(pruned, data.test)
    mode = config.mode
    if mode != "off" and getattr(data, "train", None) is None:
        report = {"ran": False, "mode": mode, "stop_reason": NO_TRAIN_SPLIT, "steps": 0}
    elif mode == "off":
        report = {"ran": False, "mode": mode, "stop_reason": TURNED_OFF, "steps": 0}
    else:
        step("recovering: distillation from the dense model "
             + (f"({config.finetune_steps} steps)" if mode == "steps" else f"(up to {config.seconds:g} s)"))
        report = distill(pruned, dense, data.train, data.calib, config, on_progress)
        done["accuracy"] = accuracy(pruned, data.test)
    done["finetune_steps"] = report["steps"]
    done["recovery"] = report
    return done


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, batch_size: int = 100, max_batches: int = 10) -> int:
    """Re-estimate BatchNorm running statistics on `dataset`; returns the number of BN layers reset."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    for i, (inputs, _) in enumerate(DataLoader(dataset, batch_size=batch_size)):
        if i >= max_batches:
            break
        model(inputs)
    for norm in norms:
        norm.momentum = 0.1
    model.train(was_training)
    return len(norms)


def one_cycle_lr(progress: float, max_lr: float, warmup: float = 0.1) -> float:
    """The learning rate at `progress` in [0, 1] of the run: linear warm-up from max_lr/10, then cosine to 0.

    >>> [round(one_cycle_lr(p, 1.0), 3) for p in (0.0, 0.1, 0.55, 1.0)]
    [0.1, 1.0, 0.5, 0.0]
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return max_lr * (0.1 + 0.9 * progress / warmup)
    return max_lr * 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup)))


class _TeacherCache:
    """The dense model's logits per training sample, computed the first time a sample is drawn.

    Without augmentation the teacher's output for a sample never changes; computing it once instead of every
    epoch saves about a third of each step after the first epoch.
    """

    def __init__(self, teacher: nn.Module, size: int):
        self.teacher, self.logits, self.filled = teacher.eval(), None, torch.zeros(size, dtype=torch.bool)

    @torch.no_grad()
    def __call__(self, indices: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self.filled is None:  # too large to cache: computed every time
            return self.teacher(inputs)
        missing = ~self.filled[indices]
        if bool(missing.any()):
            fresh = self.teacher(inputs[missing])
            if self.logits is None:
                if len(self.filled) * fresh[0].numel() > MAX_CACHED_LOGITS:  # e.g. ImageNet: 1.2 M x 1000 floats
                    self.filled = None
                    return self.teacher(inputs)
                self.logits = torch.empty(len(self.filled), *fresh.shape[1:], dtype=fresh.dtype)
            self.logits[indices[missing]] = fresh
            self.filled[indices[missing]] = True
        return self.logits[indices]


class _Indexed(Dataset):
    """(index, input, label) of a dataset of (input, label) pairs: the key of the teacher cache."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        inputs, label = self.dataset[i]
        return i, inputs, label


def distill(student: nn.Module, teacher: nn.Module, train: Dataset, calib: Dataset,
            config: RecoveryConfig = RecoveryConfig(), on_progress: OnProgress | None = None) -> dict:
    """Fine-tune `student` on the dense `teacher`'s softened outputs plus labels; returns what it did.

    Time-bounded (`config.mode == "seconds"`): the one-cycle schedule runs over the time bound, calibration
    accuracy is checked every `eval_every` steps and, past `early_stop_after` of the bound, the run stops early
    once it reaches the teacher's or stops improving; the weights of the best check past that point are kept
    (or the starting ones, when no check beat them). Fixed steps: exactly `finetune_steps` steps, the schedule
    over the steps, no early stop (the final weights are kept, as a sweep's equal recovery needs).
    """
    timed = config.mode == "seconds"
    total = config.seconds if timed else float(config.finetune_steps)
    with torch_threads(config.threads):
        report = {"ran": True, "mode": config.mode, "seconds_limit": config.seconds if timed else None,
                  "dense_calib_accuracy": accuracy(teacher, calib), "calib_accuracy_before": accuracy(student, calib)}
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        steps, stop = _train(student, teacher, train, calib, config, report, on_progress, total, start_wall)
        student.eval()
        report.update(steps=steps, stop_reason=stop, calib_accuracy_after=accuracy(student, calib),
                      seconds=round(time.perf_counter() - start_wall, 2),
                      thread_cpu_seconds=round(time.thread_time() - start_cpu, 2))
    if on_progress is not None:
        on_progress(total, total, f"{stop}: calibration accuracy {report['calib_accuracy_after']:.2%}")
    return report


def _train(student: nn.Module, teacher: nn.Module, train: Dataset, calib: Dataset, config: RecoveryConfig,
           report: dict, on_progress: OnProgress | None, total: float, start_s: float) -> tuple[int, str]:
    """The distillation loop of `distill`; returns (steps taken, stop reason)."""
    timed = config.mode == "seconds"
    if len(train) == 0:  # nothing to draw from (and a sampler over nothing refuses to be built)
        return 0, EMPTY_TRAIN_SPLIT
    loader = DataLoader(_Indexed(train), batch_size=config.batch_size, shuffle=True,
                        drop_last=len(train) >= 2 * config.batch_size,  # no tiny last batch (noisy BN statistics)
                        generator=torch.Generator().manual_seed(config.seed))
    teacher_logits = _TeacherCache(teacher, len(train))
    optimizer = torch.optim.Adam(student.parameters(), lr=config.max_lr)
    # Time-bounded runs keep the weights of the best calibration check past `early_stop_after`, or the starting
    # ones when none of those is better.
    best_accuracy, checks_since_best, steps = report["calib_accuracy_before"], 0, 0
    best_state = copy.deepcopy(student.state_dict()) if timed else None
    while True:
        for indices, inputs, labels in loader:
            elapsed_s = time.perf_counter() - start_s
            if not timed and steps >= total:
                return steps, STEPS_DONE
            if timed and elapsed_s >= total:
                if accuracy(student, calib) > best_accuracy:  # the steps since the last check count too
                    best_state = None
                return steps, _finish(student, best_state, TIME_LIMIT)
            for group in optimizer.param_groups:
                group["lr"] = one_cycle_lr((elapsed_s if timed else steps) / total, config.max_lr)
            student.train()
            soft_targets = (teacher_logits(indices, inputs) / config.temperature).softmax(dim=1)
            logits = student(inputs)
            kd = nn.functional.kl_div((logits / config.temperature).log_softmax(dim=1), soft_targets,
                                      reduction="batchmean") * config.temperature**2
            loss = kd + nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if steps % config.eval_every or (not timed and on_progress is None):  # fixed steps: checks only for the bar
                continue
            calib_accuracy = accuracy(student, calib)
            if on_progress is not None:
                done = time.perf_counter() - start_s if timed else steps
                on_progress(min(done, total), total, f"step {steps}, calibration accuracy {calib_accuracy:.2%} "
                                                     f"(dense {report['dense_calib_accuracy']:.2%})")
            if not timed:
                continue
            if elapsed_s < config.early_stop_after * total:  # the rate is still near its peak: a check there says
                continue  # little (noise), so it neither stops the run nor becomes the kept weights
            if calib_accuracy > best_accuracy:
                best_accuracy, best_state, checks_since_best = calib_accuracy, copy.deepcopy(student.state_dict()), 0
            else:
                checks_since_best += 1
            if calib_accuracy >= report["dense_calib_accuracy"]:
                return steps, _finish(student, best_state, REACHED_DENSE)
            if checks_since_best >= config.patience:
                return steps, _finish(student, best_state, PLATEAU)


def _finish(student: nn.Module, best_state: dict | None, reason: str) -> str:
    """Load the weights of the best calibration check (None: the current weights are the best)."""
    if best_state is not None:
        student.load_state_dict(best_state)
    return reason
