"""Building Torch-Pruning groups in bounded time and memory (used only by the graph wrapper).

Torch-Pruning's `get_pruning_group` has three costs that made real models (YOLO11n, RexNet,
MaxViT, Swin) run for minutes or exhaust memory before anything was pruned:

* it re-derives every concat/split/reshape index mapping before *each* group, although the
  mappings only change when channels are actually removed;
* it checks "already visited?" by scanning the whole group and comparing index lists, and
  re-sends whole index lists along every path, which is quadratic or worse in the size of a
  group (RexNet's sliced residuals couple the whole network);
* a reshape it reads as a flatten multiplies indices by the stride each time it is crossed, so a
  cycle through such reshapes (attention's head split and merge) pairs every channel with every
  root channel or grows indices without bound (21.6 GB on Swin-T).

`pruning_group` is the same closure sending only indices new to a layer, no per-group mapping refresh (the
caller refreshes once per change with `refresh_index_mappings`) and a bound: an index no layer
of the model has, or indices paired with many roots each, is proof that a mapping was misread,
and the group is refused naming the op.

>>> dg = tp.DependencyGraph().build_dependency(model, x)              # doctest: +SKIP
>>> limit = channel_index_limit(dg)                                    # doctest: +SKIP
>>> group = pruning_group(dg, model.conv1, fn, range(16), limit)       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch_pruning as tp
from torch import nn
from torch_pruning import _helpers
from torch_pruning.dependency import index_mapping, shape_infer
from torch_pruning.pruner import function

from toolchain.inputs import ModelInputs, call_model, flatten_outputs, output_shapes

# (index, root index) pairs one layer may collect per channel of the widest layer. A group whose
# channels follow one another has one root per index; attention's head reshapes legitimately pair
# an index with two (ViT's qkv). Past a few, a misread reshape is pairing everything with everything.
ROOTS_PER_INDEX_LIMIT = 4


class RecordingForward:
    """The trace's forward: `call_model`, remembering the autograd nodes that make the outputs.

    Torch-Pruning marks an output only where its tracing walk starts at it; an output that an
    earlier output's walk already passed (YOLO's Detect returns its input features beside the
    boxes) gets no output node, and its channels would be pruned.
    """

    def __init__(self):
        self.output_fns: set[object] = set()
        self.output_shapes: list[tuple[int, ...]] | None = None  # set once the model's forward has returned

    def __call__(self, model: nn.Module, inputs: ModelInputs):
        outputs = call_model(model, inputs)
        flat = flatten_outputs(outputs)
        self.output_fns = {t.grad_fn for t in flat if t.grad_fn is not None}
        self.output_shapes = output_shapes(flat)
        return outputs


class UnfollowableMapping(Exception):
    """A channel index left the range of every layer: the op's index mapping was misread.

    `fixed_split` is set when the group had already reached a split/slice (YOLO's C2f chunks by
    `self.c`): its fixed sizes are then the reason given, at `op_node`.
    """

    def __init__(self, op_node, fixed_split: bool = False):
        super().__init__(str(op_node))
        self.op_node = op_node
        self.fixed_split = fixed_split


_MAPPING_UPDATES = {
    tp.ops.OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
    tp.ops.OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    tp.ops.OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
    tp.ops.OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
    tp.ops.OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
    tp.ops.OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}


def build_dependency_graph(model: nn.Module, inputs: ModelInputs, forward,
                           customized_pruners: dict | None = None) -> tuple[tp.DependencyGraph, set]:
    """Torch-Pruning's `build_dependency`, except that an op whose index mapping cannot be derived
    is returned (in a set of nodes) instead of failing the whole build.

    ShuffleNet's channel shuffle (view to 5-D, transpose, view back) makes Torch-Pruning infer
    0 channels and divide by it; groups through such an op are refused, naming it.
    """
    dg = tp.DependencyGraph()
    dg.verbose = False
    dg.model = model
    dg._module2name = {module: name for name, module in model.named_modules()}
    for layer_type, pruner in (customized_pruners or {}).items():  # layers Torch-Pruning does not know
        dg.register_customized_layer(layer_type, pruner)
    dg.ignored_params = []
    dg._param_to_name, dg.unwrapped_parameters = dg._detect_unwrapped_parameters(None)
    dg.module2node = dg._trace(model, inputs, forward, output_transform=flatten_outputs)
    dg._build_dependency(dg.module2node)
    shape_infer.init_shape_information(dg)
    refresh_index_mappings(dg)  # a second pass sees the concat sizes the first one derived, as
    return dg, refresh_index_mappings(dg)  # Torch-Pruning's refresh before its first group does


def refresh_index_mappings(dg: tp.DependencyGraph) -> set:
    """Re-derive concat/split/reshape offsets (needed after channels were removed, not before each
    group); returns the op nodes whose mapping cannot be derived."""
    unmappable = set()
    for node in dg.module2node.values():
        update = _MAPPING_UPDATES.get(node.type)
        if update is None:
            continue
        try:
            update(dg, node)
        except (ArithmeticError, IndexError, TypeError, ValueError):
            unmappable.add(node)
    return unmappable


def channel_index_limit(dg: tp.DependencyGraph) -> int:
    """One past the largest channel count of any traced layer: no valid index reaches it."""
    limit = 1
    for node in dg.module2node.values():
        if dg.get_pruner_of_module(node.module) is None:
            continue
        for count in (dg.get_out_channels(node), dg.get_in_channels(node)):
            if isinstance(count, int):
                limit = max(limit, count)
    return limit


class GroupedConvPruner(function.ConvPruner):
    """Removes whole groups of a grouped convolution; its output side is Torch-Pruning's own.

    The weight is (out, in / groups, k, k): removing whole groups removes weight rows (the output
    side) and leaves each group's input slice as it is; only `in_channels` and `groups` change.
    """

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        per_group = layer.in_channels // layer.groups
        removed = {i // per_group for i in idxs}
        if len(removed) * per_group != len(set(idxs)):
            raise ValueError(f"channels {sorted(idxs)} are not whole groups of {per_group}")
        layer.in_channels -= len(removed) * per_group
        layer.groups -= len(removed)
        return layer


_GROUPED_CONV = GroupedConvPruner()


def _grouped(module) -> bool:
    """A grouped (not depthwise) convolution: its input and output groups must go together."""
    return (isinstance(module, tp.ops.TORCH_CONV) and module.groups > 1 and not module.transposed
            and tp.ops.module2type(module) == tp.ops.OPTYPE.CONV)


class _GroupCrossing:
    """Carries indices across grouped convolutions, one root per conv group.

    Every channel on the far side of a group answers to all root channels on the near side; they
    travel with one representative root (pairing each with all would multiply the index lists),
    and `joins` records that the others must be removed with it.
    """

    def __init__(self):
        self.representative: dict[tuple, int | None] = {}
        self.joins: list[tuple[int, int]] = []
        self.crossed: set[tuple] = set()

    def __call__(self, node, idxs, to_output: bool) -> list:
        conv = node.module
        per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        here, there = (per_in, per_out) if to_output else (per_out, per_in)
        crossed = []
        for i in idxs:
            g = i.idx // here
            root = self.representative.setdefault((node, g), i.root_idx)
            if root is not None and i.root_idx is not None:
                self.joins.append((i.root_idx, root))
            if (node, g, to_output) not in self.crossed:  # the far side of a group is the same every time
                self.crossed.add((node, g, to_output))
                crossed.extend(_helpers._HybridIndex(idx=g * there + k, root_idx=root) for k in range(there))
        return crossed


def pruning_group(dg: tp.DependencyGraph, module: nn.Module, pruning_fn, idxs: Iterable[int],
                  index_limit: int, unmappable: set = frozenset()) -> tp.dependency.Group:
    """Torch-Pruning's group of `module`'s channels `idxs`, computed in time linear in its size.

    Unlike Torch-Pruning, a grouped convolution couples its input and output channels group by
    group, so removing whole groups travels through it. The group carries `root_blocks`: sets of
    root channels that must be removed together (a whole conv group; a channel reused twice
    after a concat, as in GhostNet). Raises UnfollowableMapping when an index reaches `index_limit`
or an op in `unmappable`.
    """
    if isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
        pruning_fn = function.prune_depthwise_conv_out_channels
    root = dg.module2node[module]
    root_dep = tp.dependency.Dependency(pruning_fn, pruning_fn, source=root, target=root)
    start = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
    # Every mapping acts on each index alone, so only indices new to a (layer, function) need
    # to travel on: each (layer, function, index) is handled once, however many paths reach it.
    reached: dict[tuple, tuple[object, dict]] = {(root, pruning_fn): (root_dep, dict.fromkeys(start))}
    stack = [(root_dep, start)]
    crossing = _GroupCrossing()
    splits: list = []

    def unfollowable(op_node) -> None:
        raise UnfollowableMapping(splits[0], fixed_split=True) if splits else UnfollowableMapping(op_node)

    def reach(dep, mapped) -> None:
        if dep.target in unmappable:
            unfollowable(dep.target)
        _, known = reached.setdefault((dep.target, dep.handler), (dep, {}))
        new = [i for i in dict.fromkeys(mapped) if i not in known]
        if not new:
            return
        known.update(dict.fromkeys(new))
        if len(known) > ROOTS_PER_INDEX_LIMIT * index_limit or any(not 0 <= i.idx < index_limit for i in new):
            unfollowable(dep.source if dep.source.module not in dg._module2name else dep.target)
        if dep.target.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE):
            splits.append(dep.target)
        stack.append((dep, new))

    while stack:
        dep, fresh = stack.pop()
        node = dep.target
        if _grouped(node.module):
            conv_pruner = dg.get_pruner_of_module(node.module)
            sides = {conv_pruner.prune_in_channels: conv_pruner.prune_out_channels,
                     conv_pruner.prune_out_channels: conv_pruner.prune_in_channels}
            if dep.handler in sides:
                other = sides[dep.handler]
                reach(tp.dependency.Dependency(dep.handler, other, source=node, target=node),
                      crossing(node, fresh, to_output=other == conv_pruner.prune_out_channels))
        for new_dep in node.dependencies:
            if not new_dep.is_triggered_by(dep.handler):
                continue
            mapped = fresh
            try:
                for mapping in new_dep.index_mapping:
                    if mapping is not None:
                        mapped = mapping(mapped)
            except (ArithmeticError, IndexError):  # offsets that do not fit the op's inputs
                unfollowable(new_dep.source if new_dep.source.module not in dg._module2name else new_dep.target)
            if mapped:
                reach(new_dep, mapped)
    group = _merged(dg, [(dep, list(known)) for dep, known in reached.values()])
    group.root_blocks = _root_blocks((known for _, known in reached.values()), crossing.joins)
    return group


def _root_blocks(pair_sets, joins: list[tuple[int, int]]) -> list[list[int]]:
    """Root channels joined where one channel of some layer answers to several, or by `joins`."""
    parent: dict[int, int] = {}

    def find(r: int) -> int:
        while parent.setdefault(r, r) != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for pairs in pair_sets:
        first_root: dict[int, int] = {}
        for pair in pairs:
            if pair.root_idx is None:
                continue
            other = first_root.setdefault(pair.idx, pair.root_idx)
            if other == pair.root_idx:  # the common case, one root channel per channel: nothing to join
                parent.setdefault(other, other)
            else:
                parent[find(pair.root_idx)] = find(other)
    for a, b in joins:
        parent[find(a)] = find(b)
    blocks: dict[int, list[int]] = {}
    for r in sorted(parent):
        blocks.setdefault(find(r), []).append(r)
    return sorted(blocks.values())


def _merged(dg: tp.DependencyGraph, items) -> tp.dependency.Group:
    """One item per (layer, pruning function), indices united in first-seen order (as Torch-Pruning does)."""
    ignored = {id(p) for p in dg.ignored_params}
    slots: dict[tuple, tuple[object, list, set]] = {}
    for dep, hybrid in items:
        if isinstance(dep.target.module, nn.Parameter) and id(dep.target.module) in ignored:
            continue
        _, merged, present = slots.setdefault((dep.target, dep.handler), (dep, [], set()))
        for index in hybrid:
            if index.idx not in present:
                present.add(index.idx)
                merged.append(index)
    group = tp.dependency.Group()
    group._DG = dg
    for dep, merged, _ in slots.values():
        if _grouped(dep.target.module) and dep.handler == dg.get_pruner_of_module(dep.target.module).prune_in_channels:
            dep = tp.dependency.Dependency(dep.trigger, _GROUPED_CONV.prune_in_channels, dep.source, dep.target)
        item = _helpers.GroupItem(dep, _helpers.to_plain_idxs(merged))
        item.root_idxs = _helpers.to_root_idxs(merged)
        group._group.append(item)
    return group


def all_groups(dg: tp.DependencyGraph, ignored: list[nn.Module], index_limit: int, unmappable: set,
               root_types: tuple[type, ...] = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR),
               ) -> Iterator[tuple[nn.Module, tp.dependency.Group | None, UnfollowableMapping | None]]:
    """(root layer, full group or None, why not or None) for every conv/linear root.

    Like Torch-Pruning's `get_all_groups`: a layer already pruned as the output of an earlier group
    roots no group of its own; groups touching an ignored layer are dropped.
    """
    visited: set[nn.Module] = set()
    ignored_ids = {id(m) for m in [*ignored, *dg.IGNORED_LAYERS_IN_TRACING]}
    for module in list(dg.module2node):
        if id(module) in ignored_ids or module in visited:
            continue
        if not isinstance(module, root_types):
            continue
        pruner = dg.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = pruning_group(dg, module, pruner.prune_out_channels,
                                  range(pruner.get_out_channels(module)), index_limit, unmappable)
        except UnfollowableMapping as exc:
            visited.add(module)
            yield module, None, exc
            continue
        touches_ignored = False
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                touches_ignored |= id(dep.target.module) in ignored_ids
        if not touches_ignored:
            yield module, group, None


def describe_op(node, names: dict[nn.Module, str], op_owners: dict[object, str]) -> str:
    """A functional op named by the module that runs it, else by the nearest layer feeding it.

    The owner is trusted only when it contains that layer: a module instance shared by many
    layers (Ultralytics' one `SiLU` for every Conv) would otherwise name the wrong place.
    """
    if node.module in names:
        return repr(names[node.module])
    kind = getattr(node.type, "name", "op").lower()
    upstream_layer = None
    frontier, seen = list(node.inputs), set()
    while frontier and upstream_layer is None:
        upstream = frontier.pop(0)
        if upstream in seen:
            continue
        seen.add(upstream)
        if upstream.module in names:
            upstream_layer = names[upstream.module]
        frontier.extend(upstream.inputs)
    owner = op_owners.get(getattr(node, "grad_fn", None))
    if owner is not None and (upstream_layer is None or upstream_layer.startswith(owner + ".")):
        return f"the {kind} op in {owner!r}"
    if upstream_layer is not None:
        return f"the {kind} op after {upstream_layer!r}"
    return f"a {kind} op"


def grouped_conv_refusal(module: nn.Module) -> str | None:
    """Why a grouped convolution cannot have whole groups removed, or None when it can."""
    if isinstance(module, tp.ops.TORCH_CONV) and module.groups > 1 and module.transposed:
        return f"grouped transposed convolution (groups={module.groups}) is not pruned"
    if isinstance(module, tp.ops.TORCH_CONV) and module.groups > 1 and not _grouped(module):
        depthwise = module.groups == module.in_channels == module.out_channels
        if not depthwise:
            return f"grouped convolution with groups=out_channels={module.groups} is not pruned"
    return None


def block_unit(blocks: list[list[int]]) -> int | None:
    """The size shared by all blocks of root channels, or None when their sizes differ."""
    sizes = {len(b) for b in blocks}
    return sizes.pop() if len(sizes) == 1 else None
