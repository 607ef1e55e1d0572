"""The one wrapper over Torch-Pruning's DepGraph: coupled channel groups and physical shrinking.

Torch-Pruning finds which channels must be removed together (a residual add couples the
outputs of several convolutions; a concatenation maps slices of one layer onto another) and
performs the layer surgery. This module adds what a deployment tool needs on top:

* stable group names (the path of the group's root layer), so widths chosen on one copy of a
  model apply to another copy built from the same factory;
* automatic protection of every group whose channels reach a model output, so a pruned
  model's outputs keep the dense model's shapes with no list from the user;
* attention heads pruned as whole heads (q, k and v slices together, `num_heads` updated);
* structures Torch-Pruning would mis-handle (grouped convolutions, `nn.MultiheadAttention`)
  are frozen with a stated reason instead of being pruned wrongly;
* a shape check after every shrink: a wrong model is never returned.

>>> model = create_model("demo")
>>> graph = PruningGraph(model, torch.randn(1, 1, 28, 28))
>>> graph.shrink({g.name: g.width // 2 for g in graph.groups})   # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn

from toolchain import graph_build
from toolchain.errors import ToolchainError
from toolchain.inputs import ModelInputs, call_model, flatten_outputs, output_shapes

# Relative error allowed between the shrunk model and the dense model with the removed channels
# zeroed: float32 summation order differs between the two, nothing else may.
EQUIVALENCE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together, named after the layer whose outputs they are.

    `width` counts channels of the root layer's output (for attention: of one of q, k, v);
    `unit` is the granularity of pruning: head_dim for heads, the block size where whole conv
    groups (or channels a concat reuses) go together, else 1.
    """

    name: str
    width: int
    dense_width: int
    unit: int
    kind: str  # "channels" or "heads"
    layers: tuple[str, ...]


@dataclass(frozen=True)
class FrozenGroup:
    """A group that will not be pruned, and why."""

    name: str
    width: int
    reason: str


def _attention_parent(model: nn.Module, linear_name: str) -> nn.Module | None:
    """The module owning a fused `qkv` projection with `num_heads`/`head_dim`, if any."""
    parent_name, _, leaf = linear_name.rpartition(".")
    if leaf != "qkv":
        return None
    parent = model.get_submodule(parent_name) if parent_name else model
    heads, head_dim = getattr(parent, "num_heads", None), getattr(parent, "head_dim", None)
    if isinstance(heads, int) and isinstance(head_dim, int):
        return parent
    return None


class PruningGraph:
    """Coupled channel groups of a model, and the surgery that shrinks them in place.

    `protect` names layers (module paths) whose output channels must be kept; the layers that
    produce the model's outputs are always protected. `dense_widths` lets a graph built on an
    already pruned model report the original widths.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: ModelInputs,
        protect: tuple[str, ...] = (),
        dense_widths: dict[str, int] | None = None,
    ):
        self.model = model
        self.example_input = example_input
        self._names = {m: n for n, m in model.named_modules()}
        unknown = [p for p in protect if p not in dict(model.named_modules())]
        if unknown:
            raise ToolchainError(f"cannot protect {unknown[0]!r}: no such module in the model")
        protected_modules = [model.get_submodule(p) for p in protect]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self._dense_output_shapes = output_shapes(call_model(model, example_input))
            forward = graph_build.RecordingForward()
            with torch.enable_grad(), _recording_op_owners(model) as self._op_owners:
                self._dg, self._unmappable = graph_build.build_dependency_graph(model, example_input, forward)
            self._output_fns = forward.output_fns
        except ToolchainError:
            raise
        except Exception as exc:
            raise ToolchainError(f"the model cannot be traced for pruning: {type(exc).__name__}: {exc}") from exc
        finally:
            model.train(was_training)
        self._index_limit = graph_build.channel_index_limit(self._dg)
        self.groups: list[ChannelGroup] = []
        self.frozen: list[FrozenGroup] = []
        self._roots: dict[str, nn.Module] = {}
        # Full groups found at construction, valid until the first shrink: rebuilding a group
        # re-derives every concat/split index mapping, which dominates on DenseNet-like models.
        self._initial_groups: dict[str, object] = {}
        self._collect_groups(protected_modules, dense_widths or {})

    # -- discovery -------------------------------------------------------------------------
    def _collect_groups(self, protected: list[nn.Module], dense_widths: dict[str, int]) -> None:
        for root, group, unfollowable in graph_build.all_groups(self._dg, protected, self._index_limit,
                                                                     self._unmappable):
            name = self._names[root]
            if group is None:
                where = graph_build.describe_op(unfollowable.op_node, self._names, self._op_owners)
                why = ("sizes are fixed in forward()" if unfollowable.fixed_split
                       else "channel mapping cannot be followed")
                self.frozen.append(FrozenGroup(name, self._out_channels(root), f"its channels pass through "
                                               f"{where} whose {why}"))
                continue
            width = len(group[0].idxs)
            layers = tuple(dict.fromkeys(
                self._names[d.target.module] for d, _ in group if isinstance(d.target.module, nn.Module)
                and d.target.module in self._names
            ))
            reason = self._freeze_reason(group)
            attention = _attention_parent(self.model, name) if isinstance(root, nn.Linear) else None
            if reason is None and width < 2:
                reason = "a single channel cannot be pruned"
            if reason is not None:
                self.frozen.append(FrozenGroup(name, width, reason))
                continue
            if attention is not None:
                per_projection = attention.num_heads * attention.head_dim
                if width != 3 * per_projection:
                    self.frozen.append(FrozenGroup(name, width, "qkv width is not 3 x num_heads x head_dim"))
                    continue
                group_spec = ChannelGroup(name, per_projection, per_projection, attention.head_dim, "heads", layers)
            else:
                # whole conv groups, or channels a concat reuses, are removed as one block
                unit = graph_build.block_unit(group.root_blocks)
                if unit is None or width // unit < 2:
                    self.frozen.append(FrozenGroup(name, width, "its channels are coupled in blocks that cannot be "
                                                   "removed evenly (grouped convolution or reused channels)"))
                    continue
                group_spec = ChannelGroup(name, width, width, unit, "channels", layers)
            if name in dense_widths:
                group_spec = replace(group_spec, dense_width=int(dense_widths[name]))
            self.groups.append(group_spec)
            self._roots[name] = root
            self._initial_groups[name] = group
        order = {name: i for i, name in enumerate(self._names.values())}
        self.groups.sort(key=lambda g: order[g.name])  # model order: a stable width-vector layout
        self.frozen.sort(key=lambda f: order.get(f.name, len(order)))

    def _freeze_reason(self, group) -> str | None:
        dg = self._dg
        for dep, _ in group:
            target = dep.target
            module = target.module
            path = self._names.get(module) or graph_build.describe_op(target, self._names, self._op_owners)
            # Channels that reach a sink of the traced graph on the output side change the
            # model's output shape: never prune them.
            makes_output = len(target.outputs) == 0 or getattr(target, "grad_fn", None) in self._output_fns
            if makes_output and dg.is_out_channel_pruning_fn(dep.handler):
                return f"its channels reach a model output (at {path})"
            if getattr(target, "type", None) in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE):
                # split sizes and slice bounds are constants in the model's forward(): removing
                # channels upstream would silently change what each branch receives.
                where = graph_build.describe_op(target, self._names, self._op_owners)
                return f"its channels pass through {where} whose sizes are fixed in forward()"
            if isinstance(module, nn.MultiheadAttention):
                return f"nn.MultiheadAttention at {path} is not pruned (use a fused qkv attention module)"
            refusal = graph_build.grouped_conv_refusal(module)
            if refusal is not None:
                return f"{refusal} (at {path})"
        return None

    # -- queries ---------------------------------------------------------------------------
    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        frozen = {f.name: f.reason for f in self.frozen}
        if name in frozen:
            raise ToolchainError(f"group {name!r} cannot be pruned: {frozen[name]}")
        raise ToolchainError(f"no prunable group {name!r}; groups: {', '.join(g.name for g in self.groups)}")

    def widths(self) -> dict[str, int]:
        return {g.name: g.width for g in self.groups}

    def dense_widths(self) -> dict[str, int]:
        return {g.name: g.dense_width for g in self.groups}

    def tp_group(self, name: str):
        """The live Torch-Pruning group of `name` (all channels), for saliency criteria to score."""
        root = self._roots[self.group(name).name]
        if name in self._initial_groups:
            return self._initial_groups[name]
        graph_build.refresh_index_mappings(self._dg)
        return self._group_of(root, range(self._out_channels(root)))

    def _out_channels(self, root: nn.Module) -> int:
        return self._dg.get_pruner_of_module(root).get_out_channels(root)

    def _group_of(self, root: nn.Module, idxs):
        """The group removing `idxs` of `root`'s outputs; index mappings must be current."""
        pruner = self._dg.get_pruner_of_module(root)
        try:
            return graph_build.pruning_group(self._dg, root, pruner.prune_out_channels, idxs, self._index_limit,
                                             self._unmappable)
        except graph_build.UnfollowableMapping as exc:
            where = graph_build.describe_op(exc.op_node, self._names, self._op_owners)
            raise ToolchainError(f"the channels of {self._names[root]!r} pass through {where} whose channel "
                                 f"mapping cannot be followed; protect {self._names[root]!r} with --protect") from exc

    def default_scores(self, name: str) -> torch.Tensor:
        """L2 filter magnitude over the whole group, one score per channel of the root layer."""
        return tp.importance.GroupMagnitudeImportance(p=2)(self.tp_group(name)).detach()

    # -- surgery ---------------------------------------------------------------------------
    def shrink(self, widths: dict[str, int], scores: dict[str, torch.Tensor] | None = None) -> None:
        """Remove channels in place so each named group keeps exactly `widths[name]` channels.

        Channels with the highest `scores` (one per root output channel; default L2 magnitude)
        are kept. Heads are kept or removed whole; their width must be a multiple of head_dim.
        """
        scores = scores or {}
        plans = []
        for name, target in widths.items():
            group = self.group(name)
            target = int(target)
            if not 1 <= target <= group.width:
                raise ToolchainError(f"width {target} for group {name!r} is outside [1, {group.width}]")
            if target % group.unit:
                what = "heads (head_dim" if group.kind == "heads" else "channel blocks (block size"
                raise ToolchainError(f"width {target} for {name!r} is not a whole number of {what} {group.unit})")
            if target < group.width:
                score = scores.get(name)
                plans.append((group, target, self.default_scores(name) if score is None else score))
        drops = [(group, target, self._drop_indices(group, target, score.detach().float().flatten()))
                 for group, target, score in plans]
        reference = self._masked_reference_output(drops)
        if plans:
            self._initial_groups.clear()
        for group, target, idxs in drops:
            self._prune_group(group, target, idxs)
        self._check_outputs(reference)

    def _drop_indices(self, group: ChannelGroup, target: int, score: torch.Tensor) -> list[int]:
        """Root output channels to remove: the lowest-scored ones (whole heads for attention)."""
        root = self._roots[group.name]
        root_width = self._dg.get_pruner_of_module(root).get_out_channels(root)
        if group.kind == "heads":
            heads, head_dim = group.width // group.unit, group.unit
            if score.numel() == root_width:  # per qkv channel: sum q, k, v and the head's dims
                score = score.view(3, heads, head_dim).sum(dim=(0, 2))
            elif score.numel() == group.width:
                score = score.view(heads, head_dim).sum(dim=1)
            _check_score_length(group.name, score, heads)
            drop = sorted(torch.argsort(score, descending=True)[target // head_dim:].tolist())
            return [s * heads * head_dim + h * head_dim + d for s in range(3) for h in drop for d in range(head_dim)]
        _check_score_length(group.name, score, root_width)
        if group.unit > 1:  # whole blocks: a conv group, or channels a concat reuses
            blocks = self.tp_group(group.name).root_blocks
            block_scores = torch.stack([score[block].sum() for block in blocks])
            drop = torch.argsort(block_scores, descending=True)[target // group.unit:].tolist()
            return sorted(r for b in drop for r in blocks[b])
        return sorted(torch.argsort(score, descending=True)[target:].tolist())

    def _masked_reference_output(self, drops) -> list[torch.Tensor] | None:
        """The dense model's output with every channel to be removed zeroed where it is consumed.

        Removing a channel is the same as feeding zeros for it to every linear consumer, so the
        shrunk model must reproduce this output. Normalisations that mix channels (LayerNorm,
        GroupNorm) break that identity; then None is returned and only shapes are checked.
        """
        if not drops:
            return None
        masks: dict[nn.Module, set[int]] = {}
        graph_build.refresh_index_mappings(self._dg)
        for group, _, idxs in drops:
            for dep, dep_idxs in self._group_of(self._roots[group.name], idxs):
                module = dep.target.module
                if module not in self._names:  # a functional op of the traced graph, not a layer
                    continue
                if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
                    return None
                if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                    consumer = self._dg.get_pruner_of_module(module)
                    if dep.handler == consumer.prune_in_channels and dep.handler != consumer.prune_out_channels:
                        masks.setdefault(module, set()).update(int(i) for i in dep_idxs)

        def zero_inputs(channels: list[int], dim: int):
            def hook(_module, inputs):
                x = inputs[0].clone()
                x.index_fill_(dim if dim >= 0 else x.dim() + dim, torch.tensor(channels), 0.0)
                return (x, *inputs[1:])
            return hook

        hooks = [m.register_forward_pre_hook(zero_inputs(sorted(c), -1 if isinstance(m, nn.Linear) else 1))
                 for m, c in masks.items()]
        try:
            with torch.no_grad():
                return flatten_outputs(call_model(self.model.eval(), self.example_input))
        finally:
            for hook in hooks:
                hook.remove()

    def _prune_group(self, group: ChannelGroup, target: int, idxs: list[int]) -> None:
        root = self._roots[group.name]
        pruner = self._dg.get_pruner_of_module(root)
        graph_build.refresh_index_mappings(self._dg)  # offsets of concats/splits moved with the last prune
        tp_group = self._group_of(root, idxs)
        tp_group.prune()
        if group.kind == "heads":
            _attention_parent(self.model, group.name).num_heads = target // group.unit
        self.groups = [replace(g, width=target) if g.name == group.name else g for g in self.groups]
        kept = pruner.get_out_channels(root)
        want = 3 * target if group.kind == "heads" else target
        if kept != want or any(
            isinstance(d.target.module, nn.modules.conv._ConvNd) and 0 in d.target.module.weight.shape[:2]
            for d, _ in tp_group
        ):
            raise ToolchainError(
                f"the pruner cannot handle {self._describe_ops(tp_group)} on the path of group {group.name!r} "
                f"(it gave {kept} channels instead of {want}, or a layer lost all its inputs): it mixes channels "
                f"in a way the pruner cannot follow; protect {group.name!r} with --protect"
            )

    def _describe_ops(self, tp_group) -> str:
        """Name the functional ops of a group and the modules that run them (for error messages)."""
        names = []
        for dep, _ in tp_group:
            node = dep.target
            if node.module in self._names:
                continue
            owner = self._op_owners.get(getattr(node, "grad_fn", None))
            if owner is not None:
                module = self.model.get_submodule(owner)
                if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                    names.append(f"module {owner!r} ({type(module).__name__})")
        ops = [dep.target.name for dep, _ in tp_group if getattr(dep.target, "type", None) == tp.ops.OPTYPE.RESHAPE]
        found = list(dict.fromkeys(names)) or [f"op {op}" for op in dict.fromkeys(ops)] or ["an op"]
        return ", ".join(found)

    def _check_outputs(self, reference: list[torch.Tensor] | None = None) -> None:
        was_training = self.model.training
        self.model.eval()
        running: list[str] = []  # the stack of modules being executed, to name the one that fails
        hooks = []

        def enter(name: str):
            def hook(_module, _inputs) -> None:
                running.append(name)
            return hook

        def leave(_module, _inputs, _output) -> None:  # returns None: the output is left as it is
            running.pop()

        for name, module in self.model.named_modules():
            if name:
                hooks.append(module.register_forward_pre_hook(enter(name)))
                hooks.append(module.register_forward_hook(leave))
        try:
            with torch.no_grad():
                outputs = call_model(self.model, self.example_input)
        except Exception as exc:
            where = running[-1] if running else "the model's own forward"
            kind = type(self.model.get_submodule(where)).__name__ if running else type(self.model).__name__
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ToolchainError(
                f"the pruner cannot handle the op in module {where!r} ({kind}): after pruning it fails with "
                f"{type(exc).__name__}: {message}; protect the layers feeding it with --protect"
            ) from exc
        finally:
            for hook in hooks:
                hook.remove()
            self.model.train(was_training)
        shapes = output_shapes(outputs)
        if shapes != self._dense_output_shapes:
            raise ToolchainError(f"pruning changed the model's output shapes from {self._dense_output_shapes} "
                                 f"to {shapes}; refusing to return a wrong model")
        if reference is not None:
            for expected, got in zip(reference, flatten_outputs(outputs)):
                scale = float(expected.abs().max()) or 1.0
                error = float((expected - got).abs().max()) / scale
                if error > EQUIVALENCE_TOLERANCE:
                    raise ToolchainError(
                        "the pruned model does not compute what the dense model computes with those channels "
                        f"removed (relative error {error:.1e}); an op between layers mixes channels in a way "
                        "the pruner cannot follow: protect the layers around it with --protect"
                    )


@contextmanager
def _recording_op_owners(model: nn.Module):
    """While tracing, map each module output's autograd node to the innermost module that made it.

    Torch-Pruning's graph nodes for functional ops carry those autograd nodes, so an error about
    an op can name the user's module that runs it.
    """
    owners: dict[object, str] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:
            fn = getattr(output, "grad_fn", None)
            if fn is not None:
                owners.setdefault(fn, name)  # inner modules finish first: keep the innermost
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        yield owners
    finally:
        for hook in hooks:
            hook.remove()


def _check_score_length(name: str, score: torch.Tensor, expected: int) -> None:
    if score.numel() != expected:
        raise ToolchainError(f"scores for group {name!r} have {score.numel()} entries, expected {expected}")
    if not torch.isfinite(score).all():
        raise ToolchainError(f"scores for group {name!r} contain NaN or inf")


def round_width(width: float, dense_width: int, multiple: int = 8, unit: int = 1) -> int:
    """Round a wanted width to the hardware multiple (or whole heads), never below one unit.

    >>> round_width(37.0, 64, multiple=8)
    40
    >>> round_width(3.2, 12, multiple=8)   # never below one multiple
    8
    >>> round_width(3.2, 6, multiple=8)    # a layer narrower than the multiple rounds to 1
    3
    """
    step = unit if unit > 1 else (multiple if dense_width >= multiple else 1)
    rounded = int(round(width / step)) * step
    return int(min(max(rounded, step), dense_width))


def widths_for_ratio(graph: PruningGraph, ratio: float, round_to: int = 8) -> dict[str, int]:
    """Widths that remove `ratio` of every prunable group's channels, rounded to `round_to`."""
    if not 0.0 <= ratio < 1.0:
        raise ToolchainError(f"ratio {ratio} is outside [0, 1)")
    return {
        g.name: round_width(g.width * (1.0 - ratio), g.width, round_to, g.unit) for g in graph.groups
    }


def count_macs_params(model: nn.Module, example_input: ModelInputs) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass and the parameter count (Torch-Pruning's counter)."""
    was_training = model.training
    model.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    finally:
        model.train(was_training)
    return int(macs), int(params)
