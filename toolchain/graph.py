"""The one wrapper over Torch-Pruning's DepGraph: coupled channel groups and physical shrinking.

Torch-Pruning finds which channels must be removed together (a residual add couples the
outputs of several convolutions; a concatenation maps slices of one layer onto another) and
performs the layer surgery. This module adds what a deployment tool needs on top:

* stable group names (the path of the group's root layer), so widths chosen on one copy of a
  model apply to another copy built from the same factory;
* automatic protection of every group whose channels reach a model output, so a pruned
  model's outputs keep the dense model's shapes with no list from the user;
* attention heads pruned as whole heads (`graph_attention`: q, k, v, the output projection and
  per-head tables together, head counts updated; key/value heads with their query groups);
* structures Torch-Pruning would mis-handle (grouped convolutions, `nn.MultiheadAttention`)
  are frozen with a stated reason instead of being pruned wrongly;
* a check after every shrink that the model equals the dense one with the removed channels
  masked (`graph_reference`): a wrong model is never returned.

>>> model = create_model("demo")
>>> graph = PruningGraph(model, torch.randn(1, 1, 28, 28))
>>> graph.shrink({g.name: g.width // 2 for g in graph.groups})   # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn

from toolchain import graph_build
from toolchain.errors import ToolchainError
from toolchain.graph_attention import (
    AttentionHeads,
    find_attention_heads,
    heads_tp_group,
    no_generation_cache,
    recording_attention_calls,
    refuse_heads_that_fail_removal,
)
from toolchain.graph_conv1d import conv1d_magnitude, customized_pruners, root_layer_types
from toolchain.graph_probes import (
    NarrowedOutputs,
    forward_hooks_on_submodules,
    narrowed_outputs,
    recording_module_outputs,
    signal_kept_in_range,
    worst_module_mismatch,
    zero_weights_woken,
)
from toolchain.graph_reference import (
    ReferenceMasks,
    channel_norm_weights,
    norm_of,
    regrouped_layer,
    relative_error,
    unverifiable_norm_reason,
)
from toolchain.graph_scale import fold_weight_standardization, scale_pruners
from toolchain.inputs import ModelInputs, call_model, flatten_outputs, output_shapes, run_checked

# Relative error allowed between the shrunk model and the dense model with the removed channels
# zeroed: float32 summation order differs between the two, nothing else may.
EQUIVALENCE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together, named after the layer whose outputs they are.

    `width` counts channels of the root layer's output (for attention: the query heads' channels);
    `unit` is the granularity of pruning: for heads, head_dim x query heads per key/value head; the
    block size where whole conv groups (or channels a concat reuses) go together; else 1.
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
        # Weight-standardized convs cannot lose input channels exactly; folded to the constant weight they use at
        # inference, they can (the graph's model is the copy being pruned: changed in place).
        self.folded_standardized_convs = fold_weight_standardization(model)
        self._names = {m: n for n, m in model.named_modules()}
        unknown = [p for p in protect if p not in dict(model.named_modules())]
        if unknown:
            raise ToolchainError(f"cannot protect {unknown[0]!r}: no such module in the model")
        protected_modules = [model.get_submodule(p) for p in protect]
        self._attention, self._refused_attention = find_attention_heads(model)
        was_training = model.training
        model.eval()
        try:
            # One forward, Torch-Pruning's trace, also gives the output shapes the shrink must keep and records the
            # attention calls that removing a head is tried on. Every forward here runs without a generation cache.
            forward = graph_build.RecordingForward()
            with (torch.enable_grad(), _recording_op_owners(model) as self._op_owners, no_generation_cache(model),
                  recording_attention_calls(self._attention) as calls):
                try:
                    self._dg, self._unmappable = graph_build.build_dependency_graph(
                        model, example_input, forward, {**customized_pruners(), **scale_pruners()})
                except BaseException as exc:  # noqa: BLE001 - a user's forward may even call sys.exit
                    if not isinstance(exc, (KeyboardInterrupt, ToolchainError)) and forward.output_shapes is None:
                        run_checked(model, example_input)  # the model's own forward failed: say so if it does untraced
                    raise
            self._output_fns, self._dense_output_shapes = forward.output_fns, forward.output_shapes
            self._attention = refuse_heads_that_fail_removal(self._attention, calls)
            del calls  # its recorded arguments hold activations
            # The same forward code fails the same way: single-head modules of a failing type (PVT-v2's first
            # stage) cannot be tried by removing a head, but their inner channels must be kept too.
            failing: dict[type, str] = {}
            for heads in self._attention:
                if heads.fails_narrower:
                    failing.setdefault(type(heads.module), heads.path)
            self._refused_attention.update({
                heads.path: heads.refusal if heads.fails_narrower else
                f"attention at {heads.path!r} ({type(heads.module).__name__}) runs the code that fails at "
                f"{failing[type(heads.module)]!r} once narrower; its channels are kept"
                for heads in self._attention if type(heads.module) in failing})
        except (KeyboardInterrupt, ToolchainError):
            raise
        except BaseException as exc:  # noqa: BLE001 - the trace runs the user's forward (see above)
            raise ToolchainError(f"the model cannot be traced for pruning: {type(exc).__name__}: {exc}") from exc
        finally:
            model.train(was_training)
        # Modules whose own output is a model output: Torch-Pruning adds no output node after them.
        self._output_modules = {model.get_submodule(self._op_owners[fn]) for fn in self._output_fns
                                if fn in self._op_owners}
        self._index_limit = graph_build.channel_index_limit(self._dg)
        self.groups: list[ChannelGroup] = []
        self.frozen: list[FrozenGroup] = []
        # Largest relative error of the last shrink against its masked dense reference, over the outputs
        # and every module output whose shape the shrink left unchanged (None until channels are removed):
        # the proof that the check ran; `verified_module_outputs` counts the module outputs compared.
        self.verified_error: float | None = None
        self.verified_module_outputs: int | None = None
        self._roots: dict[str, nn.Module] = {}
        self._heads: dict[str, AttentionHeads] = {}
        # RMSNorm-style weights are traced as bare parameters: map them back to their norm.
        self._norm_weights = channel_norm_weights(model)
        # Full groups found at construction, valid until the first shrink: rebuilding a group
        # re-derives every concat/split index mapping, which dominates on DenseNet-like models.
        self._initial_groups: dict[str, object] = {}
        self._collect_groups(protected_modules, dense_widths or {})

    # -- discovery -------------------------------------------------------------------------
    def _collect_groups(self, protected: list[nn.Module], dense_widths: dict[str, int]) -> None:
        # Heads' channels are grouped by graph_attention, not by Torch-Pruning: never a root here.
        head_producers = [layer for heads in self._attention for layer in heads.producers()]
        for root, group, unfollowable in graph_build.all_groups(self._dg, protected + head_producers,
                                                                     self._index_limit, self._unmappable,
                                                                     root_layer_types()):
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
            if reason is None and width < 2:
                reason = "a single channel cannot be pruned"
            if reason is not None:
                self.frozen.append(FrozenGroup(name, width, reason))
                continue
            # whole conv groups, or channels a concat reuses, are removed as one block
            unit = graph_build.block_unit(group.root_blocks)
            if unit is None or width // unit < 2:
                self.frozen.append(FrozenGroup(name, width, "its channels are coupled in blocks that cannot be "
                                               "removed evenly (grouped convolution or reused channels)"))
                continue
            group_spec = ChannelGroup(name, width, width, unit, "channels", layers)
            self.groups.append(replace(group_spec, dense_width=int(dense_widths.get(name, width))))
            self._roots[name] = root
            self._initial_groups[name] = group
        for heads in self._attention:
            layers = tuple(self._names[layer] for layer in heads.layers())
            if heads.refusal is not None:
                self.frozen.append(FrozenGroup(heads.name, heads.width, heads.refusal))
            elif any(layer in protected for layer in heads.producers()):
                self.frozen.append(FrozenGroup(heads.name, heads.width, f"attention {heads.path!r} is protected"))
            elif heads.num_kv_heads < 2:
                self.frozen.append(FrozenGroup(heads.name, heads.width, "a single head cannot be pruned"))
            else:
                unit = heads.group_size * heads.head_dim
                self.groups.append(ChannelGroup(heads.name, heads.width, int(dense_widths.get(heads.name, heads.width)),
                                                unit, "heads", layers))
                self._heads[heads.name] = heads
                self._roots[heads.name] = heads.query
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
            if module in self._output_modules and dg.is_out_channel_pruning_fn(dep.handler):
                return f"its channels reach a model output (at {path})"
            refused = next((r for p, r in self._refused_attention.items() if path == p or path.startswith(p + ".")),
                           None)
            if refused is not None:
                return refused
            norm = norm_of(module, self._norm_weights)
            if norm is not None and unverifiable_norm_reason(norm, self._names[norm]):
                return unverifiable_norm_reason(norm, self._names[norm])
            refusal = graph_build.grouped_conv_refusal(module)
            if refusal is not None:
                return f"{refusal} (at {path})"
        regrouped = regrouped_layer(dg, group)
        if regrouped is not None:
            return (f"a reshape folds other dims into the channels of {self._names.get(regrouped, '?')}; "
                    "its channels are not pruned")
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
        if name in self._heads:
            return heads_tp_group(self._dg, self._heads[name])
        if name in self._initial_groups:
            return self._initial_groups[name]
        graph_build.refresh_index_mappings(self._dg)
        return self._group_of(root, range(self._out_channels(root)))

    def _out_width(self, module: nn.Module) -> int | None:
        """A layer's output channels as Torch-Pruning counts them, None where it has no pruner."""
        pruner = self._dg.get_pruner_of_module(module)
        return None if pruner is None else pruner.get_out_channels(module)

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
        if name in self._heads:
            return self._heads[name].magnitude_scores()
        group = self.tp_group(name)
        score = tp.importance.GroupMagnitudeImportance(p=2)(group)
        return conv1d_magnitude(group, len(group[0].idxs)) if score is None else score.detach()

    # -- surgery ---------------------------------------------------------------------------
    def shrink(self, widths: dict[str, int], scores: dict[str, torch.Tensor] | None = None) -> None:
        """Remove channels in place so each named group keeps exactly `widths[name]` channels.

        Channels with the highest `scores` (one per root output channel; default L2 magnitude)
        are kept. Heads are kept or removed whole; their width must be a multiple of head_dim
        (of head_dim x query heads per key/value head, with grouped-query attention).
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
        # The channels to drop are chosen above, on the model as it is; the check then runs with weights that
        # hold only zeros woken, so they cannot hide what feeds them (`graph_probes.zero_weights_woken`).
        with zero_weights_woken(self.model) if drops else nullcontext():
            shifts: dict[str, list[int]] = {}  # a faded signal is scaled alike in both runs (`graph_probes`)
            reference = self._masked_reference_output(drops, shifts)
            if plans:
                self._initial_groups.clear()
            pruned_groups = []  # Torch-Pruning groups removed, to name their ops if the check fails
            for group, target, idxs in drops:
                if group.kind == "heads":
                    self._heads[group.name].remove(idxs)
                    self.groups = [replace(g, width=target) if g.name == group.name else g for g in self.groups]
                else:
                    pruned_groups.append(self._prune_group(group, target, idxs))
            self._check_outputs(reference, pruned_groups, shifts)

    def _drop_indices(self, group: ChannelGroup, target: int, score: torch.Tensor) -> list[int]:
        """Root output channels to remove: the lowest-scored ones (for attention: key/value heads)."""
        if group.kind == "heads":  # one score per query channel, summed per key/value head
            units = group.width // group.unit
            if score.numel() == group.width:
                score = score.view(units, group.unit).sum(dim=1)
            _check_score_length(group.name, score, units)
            return sorted(torch.argsort(score, descending=True)[target // group.unit:].tolist())
        root = self._roots[group.name]
        root_width = self._dg.get_pruner_of_module(root).get_out_channels(root)
        _check_score_length(group.name, score, root_width)
        if group.unit > 1:  # whole blocks: a conv group, or channels a concat reuses
            blocks = self.tp_group(group.name).root_blocks
            block_scores = torch.stack([score[block].sum() for block in blocks])
            drop = torch.argsort(block_scores, descending=True)[target // group.unit:].tolist()
            return sorted(r for b in drop for r in blocks[b])
        return sorted(torch.argsort(score, descending=True)[target:].tolist())

    def _masked_reference_output(self, drops, shifts: dict[str, list[int]]) -> tuple[list[torch.Tensor], dict] | None:
        """The dense model's outputs, and samples of its modules' outputs (`graph_probes`), with every
        channel to be removed masked where it is consumed.

        Linear consumers see zeros for removed channels; the output projection of attention sees
        zeros for removed heads; norms over channels normalise over the kept ones (`graph_reference`).
        The shrunk model must reproduce this exactly. None only when nothing is removed.
        """
        if not drops:
            return None
        masks = ReferenceMasks()
        narrowed: NarrowedOutputs = {}  # the layers whose output channels go: compared on the kept ones
        graph_build.refresh_index_mappings(self._dg)
        for group, _, idxs in drops:
            if group.kind == "heads":
                heads = self._heads[group.name]
                masks.zero_inputs(heads.output, heads.input_drops(idxs))
                continue
            tp_group = self._group_of(self._roots[group.name], idxs)
            reason = masks.mask_group(self._dg, tp_group, self._norm_weights, self._names)
            if reason is not None:  # such groups are frozen at construction (`_freeze_reason`)
                raise ToolchainError(reason)
            narrowed_outputs(tp_group, self._names, self._out_width, narrowed)
        with (recording_module_outputs(self.model, narrowed) as module_outputs,
              signal_kept_in_range(self.model, shifts), no_generation_cache(self.model)):
            outputs = masks.run(self.model, self.example_input)
        return outputs, module_outputs

    def _prune_group(self, group: ChannelGroup, target: int, idxs: list[int]):
        """Remove `idxs` of the group's root outputs (and what they couple to); returns the Torch-Pruning group."""
        root = self._roots[group.name]
        pruner = self._dg.get_pruner_of_module(root)
        graph_build.refresh_index_mappings(self._dg)  # offsets of concats/splits moved with the last prune
        tp_group = self._group_of(root, idxs)
        tp_group.prune()
        self.groups = [replace(g, width=target) if g.name == group.name else g for g in self.groups]
        kept = pruner.get_out_channels(root)
        want = target
        if kept != want or any(
            isinstance(d.target.module, nn.modules.conv._ConvNd) and 0 in d.target.module.weight.shape[:2]
            for d, _ in tp_group
        ):
            raise ToolchainError(
                f"the pruner cannot handle {self._describe_ops(tp_group)} on the path of group {group.name!r} "
                f"(it gave {kept} channels instead of {want}, or a layer lost all its inputs): it mixes channels "
                f"in a way the pruner cannot follow; protect {group.name!r} with --protect"
            )
        return tp_group

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

    def _check_outputs(self, reference: tuple[list[torch.Tensor], dict] | None = None,
                       pruned_groups: list = (), shifts: dict[str, list[int]] | None = None) -> None:
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
            with (torch.no_grad(), no_generation_cache(self.model),
                  recording_module_outputs(self.model) as module_outputs,
                  signal_kept_in_range(self.model, shifts) if shifts else nullcontext()):
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
        if reference is None:
            return
        reference_outputs, reference_modules = reference
        error = max((relative_error(expected, got)
                     for expected, got in zip(reference_outputs, flatten_outputs(outputs), strict=True)), default=0.0)
        # Inside the model too: outputs can be blind to what feeds them (a zero-initialised classifier).
        inner_error, inner_module, compared = worst_module_mismatch(reference_modules, module_outputs,
                                                                    EQUIVALENCE_TOLERANCE)
        self.verified_error, self.verified_module_outputs = max(error, inner_error), compared
        if error > EQUIVALENCE_TOLERANCE or inner_module is not None:
            ops = [self._describe_ops(g) for g in pruned_groups]
            where = ", ".join(dict.fromkeys(o for o in ops if o != "an op")) or "an op between layers"
            seen = (f"relative error {error:.1e}" if error > EQUIVALENCE_TOLERANCE
                    else f"relative error {inner_error:.1e} at the output of module {inner_module!r}")
            raise ToolchainError(
                "the pruned model does not compute what the dense model computes with those channels "
                f"removed ({seen}); {where} mixes channels in a way the pruner "
                "cannot follow: protect the layers around it with --protect"
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

    with forward_hooks_on_submodules(model, record):
        yield owners


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
