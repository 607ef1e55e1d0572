"""Attention heads for the pruning graph: found per module, removed whole, counted in attributes.

Torch-Pruning follows the channels of q, k and v through reshapes and matmuls as if they were
independent (or, for fused projections, not at all), so it removes single channels and leaves
the module's head count stale: the forward then regroups the kept channels into mixed heads.
Here each attention module is described once (`AttentionHeads`: which layers hold its heads,
which layer reads them, which attributes count them) and the graph removes heads whole.

Removing a head is exactly zeroing its channels at the input of the output projection (heads
never mix before it), which is the reference the graph verifies a shrink against.

>>> heads = find_attention_heads(timm.create_model("vit_tiny_patch16_224", depth=1))  # doctest: +SKIP
>>> heads[0].name, heads[0].num_heads, heads[0].head_dim                                 # doctest: +SKIP
('blocks.0.attn.qkv', 3, 64)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.graph_conv1d import Conv1DPruner, is_projection
from toolchain.inputs import output_shapes

# Attribute names attention modules use for their counts (timm, transformers, GPT-2).
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
KV_HEAD_COUNT_ATTRS = ("num_key_value_heads", "num_kv_heads")
INNER_WIDTH_ATTRS = ("all_head_size", "attn_dim", "inner_dim", "split_size")
HEAD_DIM_ATTRS = ("head_dim", "attention_head_size")
# Attributes of attention whose value heads are wider than its query/key heads.
UNEQUAL_HEAD_DIM_ATTRS = ("key_dim", "val_dim", "attn_ratio")
# Parameters with one entry per head along a dim: Swin's relative position bias table (last dim),
# Swin V2's logit scale (first dim).
PER_HEAD_TABLES = (("relative_position_bias_table", -1), ("logit_scale", 0))
# Separate q/k/v bias vectors of a bias-free fused qkv (Swin V2, BEiT): which projection each follows.
SPLIT_BIASES = (("q_bias", 0), ("k_bias", 1), ("v_bias", 2))
# Swin V2's continuous position-bias MLP: its last Linear has one output per head.
PER_HEAD_MLPS = ("cpb_mlp",)


def _out_width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.weight.shape[1]


def _in_width(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.weight.shape[0]


@dataclass(frozen=True)
class AttentionHeads:
    """Where one attention module keeps its heads.

    Query head h owns channels `query_offset + h*head_dim ...` of `query`; key/value head j
    (shared by query heads j*group ... (j+1)*group - 1) owns the same range of `key`/`value`
    at their offsets (one fused layer may hold all three). `output` reads the query heads'
    layout at its input; `gate` (if any) produces that layout too.
    """

    name: str          # the group's name: the path of the (first) projection layer
    path: str          # the attention module
    module: nn.Module
    query: nn.Module
    key: nn.Module
    value: nn.Module
    offsets: tuple[int, int, int]  # where q, k, v start in their layers' outputs
    output: nn.Module
    gate: nn.Module | None
    num_heads: int
    num_kv_heads: int
    head_dim: int
    # Why its heads must be kept (state this module cannot cut, a forward that fails without a
    # head); its inner channels are then frozen rather than left to the channel graph.
    refusal: str | None = None
    # Its forward failed with a head removed: it sizes its tensors from its input (PVT-v2 reshapes the heads'
    # output and the spatial reduction to the input's width), so no channel through it can go either.
    fails_narrower: bool = False

    @property
    def group_size(self) -> int:
        """Query heads per key/value head: removed together."""
        return self.num_heads // self.num_kv_heads

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    def output_in_width(self) -> int:
        """Channels the output projection reads (num_heads x head_dim when consistent)."""
        return _in_width(self.output)

    def layers(self) -> tuple[nn.Module, ...]:
        found = [self.query, self.key, self.value, self.output] + ([self.gate] if self.gate is not None else [])
        return tuple(dict.fromkeys(found))

    def producers(self) -> tuple[nn.Module, ...]:
        """Layers whose output channels are per head (their channels are grouped here, not by Torch-Pruning)."""
        tables = [owner for owner, _, _ in self.per_head_tables() if isinstance(owner, nn.Linear)]
        layers = (self.query, self.key, self.value, self.gate, *tables)
        return tuple(dict.fromkeys(layer for layer in layers if layer is not None))

    def query_channels(self, heads: Sequence[int]) -> list[int]:
        """Channels of the query layout (output's input, gate) that belong to query `heads`."""
        return [h * self.head_dim + d for h in heads for d in range(self.head_dim)]

    def output_drops(self, kv_heads: Sequence[int]) -> dict[nn.Module, list[int]]:
        """Output channels to remove from each producing layer when `kv_heads` go (with their query groups)."""
        query_heads = [j * self.group_size + i for j in kv_heads for i in range(self.group_size)]
        drops: dict[nn.Module, set[int]] = {}
        kv_channels = self.query_channels(kv_heads)
        for layer, offset, channels in ((self.query, self.offsets[0], self.query_channels(query_heads)),
                                        (self.key, self.offsets[1], kv_channels),
                                        (self.value, self.offsets[2], kv_channels)):
            drops.setdefault(layer, set()).update(offset + c for c in channels)
        if self.gate is not None:
            drops.setdefault(self.gate, set()).update(self.query_channels(query_heads))
        return {layer: sorted(channels) for layer, channels in drops.items()}

    def input_drops(self, kv_heads: Sequence[int]) -> list[int]:
        """Input channels of `output` that go with `kv_heads`."""
        return self.query_channels([j * self.group_size + i for j in kv_heads for i in range(self.group_size)])

    def per_head_tables(self) -> list[tuple[nn.Module, str, int]]:
        """(owner, parameter name, dim) of parameters with one entry per query head along dim."""
        found = []
        for owner in self.module.modules():
            for pname, dim in PER_HEAD_TABLES:
                table = getattr(owner, pname, None)
                if isinstance(table, nn.Parameter) and table.shape[dim] == self.num_heads:
                    found.append((owner, pname, dim))
        for mlp_name in PER_HEAD_MLPS:
            mlp = getattr(self.module, mlp_name, None)
            last = [m for m in mlp.modules() if isinstance(m, nn.Linear)][-1:] if isinstance(mlp, nn.Module) else []
            if last and last[0].out_features == self.num_heads:
                found += [(last[0], pname, 0) for pname in ("weight", "bias") if getattr(last[0], pname) is not None]
        return found

    def remove(self, kv_heads: Sequence[int]) -> None:
        """Remove `kv_heads` (and their query groups) in place and update the head counts."""
        kv_heads = sorted(set(int(j) for j in kv_heads))
        if not kv_heads:
            return
        if len(kv_heads) >= self.num_kv_heads:
            raise ToolchainError(f"cannot remove every head of attention {self.path!r}")
        for layer, channels in self.output_drops(kv_heads).items():
            _pruner(layer).prune_out_channels(layer, channels)
        self._remove_split_biases(kv_heads)
        _pruner(self.output).prune_in_channels(self.output, self.input_drops(kv_heads))
        query_heads = {j * self.group_size + i for j in kv_heads for i in range(self.group_size)}
        keep = torch.tensor([h for h in range(self.num_heads) if h not in query_heads])
        for owner, pname, dim in self.per_head_tables():
            table = getattr(owner, pname)
            setattr(owner, pname, nn.Parameter(table.data.index_select(dim, keep), table.requires_grad))
            if isinstance(owner, nn.Linear):
                owner.out_features = len(keep)
        heads, kv = self.num_heads - len(query_heads), self.num_kv_heads - len(kv_heads)
        _set_counts(self.module, heads, kv, heads * self.head_dim)

    def split_biases(self) -> list[tuple[str, int]]:
        """(attribute, 0/1/2 for q/k/v) of separate bias vectors the module adds to its projections."""
        return [(name, which) for name, which in SPLIT_BIASES
                if isinstance(getattr(self.module, name, None), torch.Tensor)]

    def _remove_split_biases(self, kv_heads: list[int]) -> None:
        query_heads = [j * self.group_size + i for j in kv_heads for i in range(self.group_size)]
        for name, which in self.split_biases():
            bias = getattr(self.module, name)
            dropped = set(self.query_channels(query_heads if which == 0 else kv_heads))
            keep = torch.tensor([c for c in range(bias.shape[0]) if c not in dropped])
            kept = bias.data.index_select(0, keep)
            if isinstance(bias, nn.Parameter):
                setattr(self.module, name, nn.Parameter(kept, bias.requires_grad))
            else:
                self.module.register_buffer(name, kept, persistent=name in self.module.state_dict())

    def magnitude_scores(self) -> torch.Tensor:
        """L2 norm of each query channel's weights, its key/value channels' and its output column."""
        score = torch.zeros(self.width)
        for layer, offset, repeat in ((self.query, self.offsets[0], 1), (self.key, self.offsets[1], self.group_size),
                                      (self.value, self.offsets[2], self.group_size)):
            rows = _rows(layer)[offset: offset + self.width // repeat]
            per_channel = rows.pow(2).sum(dim=1)
            per_head = per_channel.view(-1, self.head_dim).repeat_interleave(repeat, dim=0)
            score += per_head.flatten()
        columns = self.output.weight.detach().T if isinstance(self.output, nn.Linear) else self.output.weight.detach()
        score += columns.pow(2).sum(dim=1)
        return score.sqrt()


def _rows(layer: nn.Module) -> torch.Tensor:
    """The weight as [out, in], whatever the layer's storage."""
    weight = layer.weight.detach()
    return weight if isinstance(layer, nn.Linear) else weight.T


def _pruner(layer: nn.Module):
    if isinstance(layer, nn.Linear):
        return tp.pruner.function.LinearPruner()
    return Conv1DPruner()


def _set_counts(module: nn.Module, heads: int, kv_heads: int, inner_width: int) -> None:
    if _first_int(module, HEAD_COUNT_ATTRS) is None:
        # transformers 5 attention (Llama) reads its counts from the config shared by every layer;
        # the layer's own counts are recorded on the layer (forward infers them from the widths)
        module.num_heads, module.num_key_value_heads = heads, kv_heads
        return
    for attr in HEAD_COUNT_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, heads)
    for attr in KV_HEAD_COUNT_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, kv_heads)
    for attr in INNER_WIDTH_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, inner_width)


def _first_int(module: nn.Module, names: Sequence[str]) -> int | None:
    for attr in names:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _head_count(module: nn.Module) -> int | None:
    heads = _first_int(module, HEAD_COUNT_ATTRS)
    config = getattr(module, "config", None)
    if heads is None and config is not None:  # transformers 5 (Llama): counts live on the config
        heads = getattr(config, "num_attention_heads", None)
    return heads


class AttentionRefused(Exception):
    """An attention module whose heads cannot be removed safely (the message names it)."""


def _fused(path: str, module: nn.Module, model_paths: dict) -> AttentionHeads | None:
    """timm `Attention`/`WindowAttention`, the zoo's ViT, GPT-2, torchvision MaxViT: one projection holds q, k, v."""
    qkv = next((layer for n in ("qkv", "c_attn", "to_qkv") if is_projection(layer := getattr(module, n, None))), None)
    output = next((layer for n in ("proj", "c_proj", "merge") if is_projection(layer := getattr(module, n, None))),
                  None)
    heads = _head_count(module)
    if not (is_projection(qkv) and is_projection(output) and isinstance(heads, int)):
        return None
    if getattr(module, "is_cross_attention", False) or getattr(module, "q_attn", None) is not None:
        raise AttentionRefused(f"cross-attention at {path!r} ({type(module).__name__}) is not pruned")
    if any(hasattr(module, attr) for attr in UNEQUAL_HEAD_DIM_ATTRS):
        return None  # q/k and v heads of different widths (EfficientFormer): left to the channel graph
    width = _out_width(qkv)
    head_dim = _first_int(module, HEAD_DIM_ATTRS) or width // (3 * heads)
    if _in_width(output) != heads * head_dim:
        return None
    if width != 3 * heads * head_dim:
        raise AttentionRefused(f"attention at {path!r}: qkv width {width} is not 3 x {heads} heads x {head_dim}")
    gate = getattr(module, "gate", None)
    inner = heads * head_dim
    found = AttentionHeads(model_paths[qkv], path, module, qkv, qkv, qkv, (0, inner, 2 * inner), output,
                           gate if is_projection(gate) else None, heads, heads, head_dim)
    return replace(found, refusal=_unknown_per_head_state(found))


def _unknown_per_head_state(heads: AttentionHeads, input_norm: bool = False) -> str | None:
    """Why attention holding per-head state this module does not cut is refused (it would go stale).

    `input_norm`: the module's `norm` normalises an input branch (PVT's spatial reduction), not the heads."""
    module, path = heads.module, heads.path
    norm = getattr(module, "norm", None)
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) and not input_norm:
        # a norm over all heads' channels (timm scale_norm) mixes heads: removing one is not exact
        return f"attention at {path!r} normalises across heads ({type(norm).__name__}); its heads are kept"
    handled = {id(p) for layer in heads.layers() for p in layer.parameters()}
    handled |= {id(getattr(owner, name)) for owner, name, _ in heads.per_head_tables()}
    handled |= {id(getattr(module, name)) for name, _ in heads.split_biases()}
    for name, param in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if id(param) in handled or not param.is_floating_point():
            continue
        per_head = isinstance(param, nn.Parameter) and param.dim() >= 2 and heads.num_heads in (param.shape[0],
                                                                                                  param.shape[-1])
        if heads.width in param.shape or per_head:
            # Swin V2's logit_scale and continuous position-bias MLP, for instance
            return (f"attention at {path!r} has per-head tensor {name!r} {tuple(param.shape)} that is not pruned; "
                    "its heads are kept")
    return None


def _query_and_fused_kv(path: str, module: nn.Module, model_paths: dict) -> AttentionHeads | None:
    """timm PVT-v2 (spatial-reduction attention): `q` projects the queries, one `kv` layer keys then values."""
    query, kv, output = (getattr(module, n, None) for n in ("q", "kv", "proj"))
    heads = _head_count(module)
    if not (is_projection(query) and is_projection(kv) and is_projection(output) and isinstance(heads, int)):
        return None
    inner = _out_width(query)
    head_dim = _first_int(module, HEAD_DIM_ATTRS) or inner // heads
    if inner != heads * head_dim or _out_width(kv) != 2 * inner or _in_width(output) != inner:
        raise AttentionRefused(f"attention at {path!r}: q/kv widths do not match {heads} heads x {head_dim}")
    found = AttentionHeads(model_paths[query], path, module, query, kv, kv, (0, 0, inner), output, None,
                           heads, heads, head_dim)
    # Its `norm` follows the spatial reduction `sr` of the keys' input (the residual width), not the heads.
    return replace(found, refusal=_unknown_per_head_state(found, input_norm=isinstance(getattr(module, "sr", None),
                                                                                        nn.Module)))


def _separate(path: str, module: nn.Module, model_paths: dict, parents: dict) -> AttentionHeads | None:
    """transformers (BERT/ViT/Swin/SegFormer/Whisper/MobileViT/Llama): separate q, k, v projections."""
    for names in (("query", "key", "value"), ("q_proj", "k_proj", "v_proj")):
        layers = [getattr(module, n, None) for n in names]
        if all(is_projection(layer) for layer in layers):
            break
    else:
        return None
    query, key, value = layers
    output = next((getattr(module, n) for n in ("o_proj", "out_proj", "proj")
                   if is_projection(getattr(module, n, None))), None)
    parent = parents.get(module)
    if output is None and parent is not None:  # BERT-style: the sibling `output.dense` reads the heads
        dense = getattr(getattr(parent, "output", None), "dense", None)
        output = dense if is_projection(dense) else None
    heads = _head_count(module)
    if output is None or not isinstance(heads, int):
        raise AttentionRefused(f"attention at {path!r} ({type(module).__name__}): its head count or output "
                               "projection could not be found")
    head_dim = _first_int(module, HEAD_DIM_ATTRS) or _out_width(query) // heads
    kv_width = _out_width(key)
    if _out_width(query) != heads * head_dim or _in_width(output) != heads * head_dim \
            or kv_width != _out_width(value) or kv_width % head_dim:
        raise AttentionRefused(f"attention at {path!r}: q/k/v widths do not match {heads} heads x {head_dim}")
    kv_heads = kv_width // head_dim
    if heads % kv_heads:
        raise AttentionRefused(f"attention at {path!r}: {heads} query heads do not group over {kv_heads} kv heads")
    found = AttentionHeads(model_paths[query], path, module, query, key, value, (0, 0, 0), output, None,
                           heads, kv_heads, head_dim)
    return replace(found, refusal=_unknown_per_head_state(found))


def find_attention_heads(model: nn.Module) -> tuple[list[AttentionHeads], dict[str, str]]:
    """Every attention module of `model` whose heads can be removed, and refusals by module path.

    An attention module is recognised by its projections (a fused `qkv`/`c_attn`, or separate
    query/key/value layers) and a head count attribute; nothing is guessed from class names.
    """
    paths = {m: n for n, m in model.named_modules()}
    parents = {child: parent for parent in model.modules() for child in parent.children()}
    found, refused = [], {}
    for path, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            # embed_dim is both the residual width and q/k/v's inner width in nn.MultiheadAttention,
            # so a head cannot be removed without changing the residual stream
            refused[path] = f"nn.MultiheadAttention at {path!r} is not pruned (its heads share embed_dim)"
            continue
        try:
            heads = (_fused(path, module, paths) or _query_and_fused_kv(path, module, paths)
                     or _separate(path, module, paths, parents))
        except AttentionRefused as refusal:
            refused[path] = str(refusal)
            continue
        if heads is not None:
            found.append(heads)
    return found, refused


def heads_tp_group(dg: tp.DependencyGraph, heads: AttentionHeads):
    """A Torch-Pruning group over every query channel of `heads`, for saliency criteria to score.

    Item i of each layer carries root index = the query channel it goes with (key/value channels
    repeat over their query group), so a group importance sums per query channel.
    """
    group = tp.dependency.Group()
    query_roots = list(range(heads.width))
    kv_roots = [h * heads.head_dim + d for h in range(heads.num_heads) for d in range(heads.head_dim)]

    def add(layer: nn.Module, handler, idxs: list[int], roots: list[int]) -> None:
        node = dg.module2node[layer]
        group.add_dep(tp.dependency.Dependency(handler, handler, source=node, target=node), idxs)
        group[len(group) - 1].root_idxs = roots

    def kv_channel(root: int, offset: int) -> int:
        head, dim = divmod(root, heads.head_dim)
        return offset + (head // heads.group_size) * heads.head_dim + dim

    add(heads.query, dg.get_pruner_of_module(heads.query).prune_out_channels,
        [heads.offsets[0] + r for r in query_roots], query_roots)
    for layer, offset in ((heads.key, heads.offsets[1]), (heads.value, heads.offsets[2])):
        add(layer, dg.get_pruner_of_module(layer).prune_out_channels, [kv_channel(r, offset) for r in kv_roots],
            kv_roots)
    if heads.gate is not None:
        add(heads.gate, dg.get_pruner_of_module(heads.gate).prune_out_channels, query_roots, query_roots)
    add(heads.output, dg.get_pruner_of_module(heads.output).prune_in_channels, query_roots, query_roots)
    group._DG = dg
    return group


@contextmanager
def no_generation_cache(model: nn.Module) -> Iterator[None]:
    """Trace transformers models without their key/value cache.

    The cache concatenates past keys onto new ones (a generation-time feature outside the
    computation being pruned), and Torch-Pruning cannot size that concatenation.
    """
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None) is not True:
        yield
        return
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = True


AttentionCalls = dict[nn.Module, list]  # module -> [args, kwargs, output shapes] of its first call


@contextmanager
def recording_attention_calls(found: list[AttentionHeads]) -> Iterator[AttentionCalls]:
    """While a forward runs, record each attention module's first call: its arguments and its output shapes.

    The graph's first forward records them, so trying a head's removal (`refuse_heads_that_fail_removal`)
    needs no forward of its own, and no extra run of the modules as they are.
    """
    calls: AttentionCalls = {}

    def record(module, args, kwargs) -> None:
        if module not in calls:  # detached: a traced forward's autograd graph is not kept alive by them
            calls[module] = [_detached(args), _detached(kwargs), None]

    def shapes(module, _args, _kwargs, output) -> None:
        if calls[module][2] is None:
            calls[module][2] = output_shapes(output)

    handles = []
    try:
        for heads in found:
            handles.append(heads.module.register_forward_pre_hook(record, with_kwargs=True))
            handles.append(heads.module.register_forward_hook(shapes, with_kwargs=True))
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_detached(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def refuse_heads_that_fail_removal(found: list[AttentionHeads], calls: AttentionCalls) -> list[AttentionHeads]:
    """Remove one head from a copy of each attention module and run it on its recorded call
    (`recording_attention_calls`, under `no_generation_cache`: a cache would grow on every trial call).

    Some forwards hard-code the inner width to the residual width (timm Swin V2 reshapes to its
    input's C): such modules get a refusal naming them instead of failing the whole shrink.
    """
    checked = []
    for heads in found:
        if heads.module not in calls or heads.num_kv_heads < 2 or heads.refusal is not None:
            checked.append(heads)
            continue
        args, kwargs, expected = calls[heads.module]
        memo: dict = {}
        clone = copy.deepcopy(heads.module, memo)
        trial = replace(heads, module=clone, **{
            role: memo.get(id(getattr(heads, role)), copy.deepcopy(getattr(heads, role)))
            for role in ("query", "key", "value", "output") if getattr(heads, role) is not None})
        if heads.gate is not None:
            trial = replace(trial, gate=memo[id(heads.gate)])
        try:
            with torch.no_grad():
                if id(heads.output) not in memo:  # BERT-style: the module returns the heads, read outside it
                    narrower = heads.width - heads.group_size * heads.head_dim
                    expected = [(*s[:-1], narrower) if s and s[-1] == heads.width else s for s in expected]
                # Attention weights (batch, heads, queries, keys), returned by eager implementations (Hugging Face
                # BERT with attn_implementation="eager"), lose the removed query heads too.
                expected = [(s[0], s[1] - heads.group_size, *s[2:]) if len(s) == 4 and s[1] == heads.num_heads
                            and s[2] == s[3] else s for s in expected]
                trial.remove([0])
                failure = None if output_shapes(clone(*args, **kwargs)) == expected else "changes its output shape"
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            failure = f"fails ({type(exc).__name__}: {message})"
        if failure is not None:
            heads = replace(heads, refusal=f"attention at {heads.path!r} ({type(heads.module).__name__}) {failure} "
                                           "with a head removed; its heads are kept",
                            fails_narrower=failure.startswith("fails"))
        checked.append(heads)
    return checked
