"""`toolchain.deploy`: a model to a deploy bundle in one call, the pipeline `toolchain deploy` runs.

model -> prune (ratio or latency budget) -> recover -> verify -> export (ONNX, TVM; TensorRT scripts for
boards) -> bundle folder with its manifest (`toolchain.pipeline`, `toolchain.bundle`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from toolchain import defaults
from toolchain.allocate import BudgetConfig
from toolchain.budget import BudgetJob
from toolchain.bundle import BundleConfig, write_bundle
from toolchain.errors import ToolchainError
from toolchain.pipeline import PipelineConfig, Step
from toolchain.pruning import PruneConfig
from toolchain.recover import RecoveryConfig
from toolchain.targets import Target
from toolchain.targets.devices import get_device


def deploy(model: str, out: str | Path, how: PruneConfig | BudgetConfig | BudgetJob | None = None,
           device: str | BundleConfig = defaults.TARGET, data: str | None = None,
           step: Step = lambda _: None, recovery: RecoveryConfig | None = None) -> dict:
    """Prune `model` for `device`, recover, verify, export, and write its deploy bundle to `out`; the manifest.

    `how`: a ratio prune (`PruneConfig`; None: the default one), or a latency budget (`BudgetConfig`: timed
    on this host for device "cpu", on the board for a `BundleConfig` with `rpc`; a `BudgetJob` chooses the
    timing or passes providers). `data`: "mnist5k", "cifar10:DIR", "file.py:function" or "none" (None:
    MNIST-5k for zoo:demo). With data the pruned model is recovered by distillation from the dense model
    (`recovery`; None: the default, bounded by time, or a `BudgetConfig`'s own `recovery`).

    >>> from toolchain.recover import RecoveryConfig
    >>> out, quick = Path(tempfile.mkdtemp()) / "demo", RecoveryConfig(seconds=5)   # distil for up to 5 s
    >>> manifest = toolchain.deploy("zoo:demo", out, toolchain.PruneConfig(ratio=0.5), device="cpu", recovery=quick)
    >>> manifest["macs"] < manifest["dense_macs"], manifest["recovery"]["ran"]
    (True, True)
    >>> (out / manifest["tvm"]["library"]).is_file()
    True
    """
    how = how if how is not None else PruneConfig()
    if recovery is not None and isinstance(how, BudgetConfig):
        how = replace(how, recovery=recovery)
    elif recovery is not None and isinstance(how, BudgetJob):
        how = replace(how, budget=replace(how.budget, recovery=recovery))
    bundle = device if isinstance(device, BundleConfig) else BundleConfig(device=device)
    job = _budget_job(how, bundle) if isinstance(how, (BudgetConfig, BudgetJob)) else None
    prune = how if isinstance(how, PruneConfig) else PruneConfig(round_to=job.budget.round_to,
                                                                 protect=job.budget.protect)
    pipeline = PipelineConfig(model=model, out=Path(out), data=data, prune=prune,
                              target=get_device(bundle.device).name, budget=job,
                              recovery=recovery if recovery is not None else RecoveryConfig())
    return write_bundle(bundle, pipeline, step)


def _budget_job(how: BudgetConfig | BudgetJob, bundle: BundleConfig) -> BudgetJob:
    """A budget is met by measuring on the target: this host for "cpu", otherwise the board over RPC."""
    if isinstance(how, BudgetJob):
        return how
    device = get_device(bundle.device)
    if device.name != "cpu" and bundle.rpc is None:
        raise ToolchainError(f"a latency budget is met by measuring on the target; for {device.name} give the "
                             "board (BundleConfig(rpc=...)), or prune by ratio (the bundle then labels its "
                             "latency as predicted)")
    # Timed as `toolchain deploy` times: the measurement policy's defaults, the clock resolved for the target.
    return BudgetJob(how, Target(defaults.TARGET, rpc=bundle.rpc))
