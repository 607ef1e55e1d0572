"""Replay of the part of a model that a group's mask cannot change, so a coalition costs only what follows it.

The Shapley game evaluates hundreds of coalitions of one group's channels on the same images; every layer
computed before the group's consumers gives the same output for all of them. `PrefixCache` records one
forward with the mask as the only tensor that requires a gradient: a module call whose output does not
require one does not depend on the mask. The outermost such calls (with a tensor output, one row per image)
are replayed from the recording, repeated for each coalition, instead of being recomputed. Calls are matched
by order per module, so a module called several times (a shared ReLU) replays each call in turn.

>>> cache = PrefixCache.record(model, graph, "layer3.0.conv1", images)       # doctest: +SKIP
>>> with cache.replaying(copies=32):                                          # doctest: +SKIP
...     outputs = model(images.repeat(32, 1, 1, 1))   # stem, layer1, layer2 not recomputed
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from toolchain.graph import PruningGraph
from toolchain.saliency._masking import masked, root_width


@dataclass
class _Call:
    module: nn.Module
    parent: _Call | None
    output: torch.Tensor | None = None  # set when the output is a mask-independent tensor with a row per image
    replayed: bool = False


@dataclass
class PrefixCache:
    """Per module, the plan of its calls in a replayed forward: a recorded output, or None (run it)."""

    plans: dict[nn.Module, list[torch.Tensor | None]] = field(default_factory=dict)

    @property
    def replays(self) -> int:
        return sum(output is not None for plan in self.plans.values() for output in plan)

    @classmethod
    @torch.no_grad()
    def record(cls, model: nn.Module, graph: PruningGraph, name: str, inputs: torch.Tensor,
               fixed: dict[str, torch.Tensor] | None = None) -> PrefixCache:
        """Record one forward of `inputs` with group `name`'s mask as the only tensor requiring a gradient
        (and other groups held at their `fixed` keep masks)."""
        calls: list[_Call] = []
        stack: list[_Call] = []
        rows = inputs.shape[0]

        def before(module, _args):
            calls.append(_Call(module, stack[-1] if stack else None))
            stack.append(calls[-1])

        def after(_module, _args, output):
            call = stack.pop()
            if isinstance(output, torch.Tensor) and not output.requires_grad and output.dim() > 0 \
                    and output.shape[0] == rows:
                call.output = output.detach()

        modules = [m for m in model.modules() if m is not model]
        handles = [h for m in modules for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
        saved = [(p, p.requires_grad) for p in model.parameters()]
        mask = torch.ones(root_width(graph, name), requires_grad=True)
        try:
            for p, _ in saved:
                p.requires_grad_(False)
            with torch.enable_grad(), masked(graph, {**(fixed or {}), name: mask}):
                model(inputs)
        finally:
            for handle in handles:
                handle.remove()
            for p, flag in saved:
                p.requires_grad_(flag)
        cache = cls()
        for call in calls:  # in call order: a parent before its children
            if _inside_replayed(call):
                continue  # never reached in a replayed forward
            call.replayed = call.output is not None
            cache.plans.setdefault(call.module, []).append(call.output if call.replayed else None)
        cache.plans = {m: plan for m, plan in cache.plans.items() if any(o is not None for o in plan)}
        return cache

    @contextmanager
    def replaying(self, copies: int) -> Iterator[None]:
        """Within the block, recorded calls return their output repeated `copies` times."""
        counters = dict.fromkeys(self.plans, 0)
        originals = {}

        def replay(module: nn.Module, original):
            def forward(*args, **kwargs):
                plan = self.plans[module]
                output = plan[counters[module] % len(plan)]
                counters[module] += 1
                if output is None:
                    return original(*args, **kwargs)
                return output.repeat(copies, *[1] * (output.dim() - 1))
            return forward

        for module in self.plans:
            originals[module] = module.__dict__.get("forward")
            module.forward = replay(module, module.forward)
        try:
            yield
        finally:
            for module, original in originals.items():
                if original is None:
                    del module.forward
                else:
                    module.forward = original


def _inside_replayed(call: _Call) -> bool:
    """Whether an enclosing call is replayed (so this one never runs)."""
    parent = call.parent
    while parent is not None:
        if parent.replayed:
            return True
        parent = parent.parent
    return False
