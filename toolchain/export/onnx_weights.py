"""A large model's ONNX graph exported without its weights, which are then written beside it as external data.

The TorchScript exporter builds the whole file in memory: every weight is copied into the protobuf, the protobuf
is serialized (a second copy) and then written. For a 420 M-parameter pruned ViT-H/14 that took 11.7 s of a
21.6 s export at one thread. Even with `export_params=False` it hands every parameter to ONNX shape inference,
which copies them into a protobuf again (2.1 s of the 6.7 s left). Here the module is exported with its
parameters and buffers passed as extra inputs (`_WeightsAsInputs`: swapped in for the traced call, so the
exporter sees no parameter at all, only input shapes), and each such input is turned into an initializer whose
bytes go straight from the tensor to `<file>.data`, named by its module path. Constant folding is left to
onnxruntime, which does it when it loads the file; the file is verified against PyTorch in onnxruntime anyway.

The graph is complete when `export_weights_apart` returns; the data file is written by the executor it is given
(a second thread: the writes spend their time in the kernel and release the GIL), so the caller can compute its
PyTorch references meanwhile, and must wait for the returned future before anything reads the file.

>>> with ThreadPoolExecutor(1) as writer:                                          # doctest: +SKIP
...     data_written = export_weights_apart(model, (x,), Path("m.onnx"), 17, ["input"], ["output"], writer)
...     data_written.result()   # m.onnx.data complete (or the write's OSError raised here)
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import torch
from torch import nn

ALIGNMENT = 4096  # each tensor starts on a page boundary, so a reader can map it


class _WeightsAsInputs(nn.Module):
    """`module(*args)` called as `wrapper(*args, *weights)`: each parameter and buffer of `module` is replaced by
    the matching extra input for the call (and put back after it), tied ones by the same input.

    >>> wrapper = _WeightsAsInputs(nn.Linear(2, 1), n_args=1)
    >>> list(wrapper.weights)
    ['weight', 'bias']
    >>> wrapper(torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1)).item()
    2.0
    """

    def __init__(self, module: nn.Module, n_args: int):
        super().__init__()
        object.__setattr__(self, "wrapped", module)  # not a submodule: the wrapper itself holds no parameter
        self.n_args = n_args
        self.weights: dict[str, torch.Tensor] = {}  # each tensor once, under its first module path
        self.slots: list[tuple[dict, str, int]] = []  # (an owner's _parameters or _buffers, key, weight index)
        index_of: dict[int, int] = {}
        for prefix, owner in module.named_modules(remove_duplicate=False):
            for store in (owner._parameters, owner._buffers):
                for key, tensor in store.items():
                    if tensor is None:
                        continue
                    if id(tensor) not in index_of:
                        index_of[id(tensor)] = len(self.weights)
                        self.weights[f"{prefix}.{key}" if prefix else key] = tensor
                    self.slots.append((store, key, index_of[id(tensor)]))

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """The wrapped module's submodules under their own paths: the exporter names each node by the module that
        runs it (`/layer1/layer1.0/conv1/Conv`), as when the module itself is exported. (Its state dict and
        children stay empty: those are what it collects parameters from.)"""
        yield prefix, self
        for name, module in self.wrapped.named_modules(memo, prefix, remove_duplicate):
            if module is not self.wrapped:
                yield name, module

    def forward(self, *inputs):
        args, weights = inputs[:self.n_args], inputs[self.n_args:]
        saved = [(store, key, store[key]) for store, key, _ in self.slots]
        try:
            for store, key, index in self.slots:
                store[key] = weights[index]
            return self.wrapped(*args)
        finally:
            for store, key, value in saved:
                store[key] = value


def _consumed(graph) -> set[str]:
    """Names read by the graph's nodes (subgraphs included) or returned as its outputs."""
    import onnx

    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                names |= _consumed(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    names |= _consumed(subgraph)
    return names


def export_weights_apart(module: nn.Module, args: tuple, path: Path, opset: int, input_names: list[str],
                         output_names: list[str], writer: Executor) -> Future | None:
    """Write `path` for `module(*args)` and start writing `path.data` in `writer`; return the write's future.
    None (and nothing written) when a weight's module path is also an input's name, or a graph input is neither
    an input nor a weight: the caller then exports the usual way. The module's tensors must not change until the
    future is done."""
    import onnx

    wrapper = _WeightsAsInputs(module, len(args))
    if set(wrapper.weights) & set(input_names):
        return None
    torch.onnx.export(wrapper, (*args, *(t.detach() for t in wrapper.weights.values())), str(path),
                      opset_version=opset, dynamo=False, do_constant_folding=False,
                      input_names=[*input_names, *wrapper.weights], output_names=output_names)
    proto = onnx.load(str(path))
    graph = proto.graph
    stored = [i for i in graph.input if i.name not in input_names]
    if any(i.name not in wrapper.weights for i in stored):
        path.unlink()
        return None
    used = _consumed(graph)  # a weight no node reads (a training-only head) is not written
    stored = [i for i in stored if i.name in used]
    data_path = path.with_name(path.name + ".data")
    placed: list[tuple[int, np.ndarray]] = []  # (offset, bytes) of each tensor in the data file
    offset = 0
    for graph_input in stored:
        tensor = wrapper.weights[graph_input.name].detach().contiguous().cpu()
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        offset += -offset % ALIGNMENT
        placed.append((offset, raw))
        initializer = onnx.TensorProto(name=graph_input.name, data_type=graph_input.type.tensor_type.elem_type,
                                       dims=list(tensor.shape), data_location=onnx.TensorProto.EXTERNAL)
        for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(raw.nbytes))):
            entry = initializer.external_data.add()
            entry.key, entry.value = key, value
        graph.initializer.append(initializer)
        offset += raw.nbytes
    kept = [i for i in graph.input if i.name in input_names]  # the model's inputs; its weights are initializers
    del graph.input[:]
    graph.input.extend(kept)
    onnx.save(proto, str(path))
    return writer.submit(_write_data, data_path, placed)


def _write_data(data_path: Path, placed: list[tuple[int, np.ndarray]]) -> None:
    """Each tensor's bytes at its offset, zeros between (the alignment padding)."""
    with open(data_path, "wb") as data:
        for offset, raw in placed:
            data.write(b"\0" * (offset - data.tell()))
            data.write(memoryview(raw))
