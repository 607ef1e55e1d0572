"""A large model's ONNX graph exported without its weights, which are then written beside it as external data.

The TorchScript exporter builds the whole file in memory: every weight is copied into the protobuf, the protobuf
is serialized (a second copy) and then written. For a 420 M-parameter pruned ViT-H/14 that took 11.7 s of a
21.6 s export at one thread (9.9 s without the weights). Here the graph is exported with `export_params=False`
(each parameter and buffer becomes a graph input named by its module path), and each such input is turned into
an initializer whose bytes go straight from the tensor to `<file>.data`. Constant folding is left to
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


def export_weights_apart(module: nn.Module, args: tuple, path: Path, opset: int, input_names: list[str],
                         output_names: list[str], writer: Executor) -> Future | None:
    """Write `path` for `module(*args)` and start writing `path.data` in `writer`; return the write's future.
    None (and nothing written) when a graph input is neither one of `args` nor a parameter or buffer of `module`:
    the caller then exports the usual way. The module's tensors must not change until the future is done."""
    import onnx

    torch.onnx.export(module, args, str(path), opset_version=opset, dynamo=False, export_params=False,
                      do_constant_folding=False, input_names=input_names, output_names=output_names)
    proto = onnx.load(str(path))
    tensors = {**dict(module.named_parameters(remove_duplicate=False)),
               **dict(module.named_buffers(remove_duplicate=False))}  # tied tensors under each of their names
    graph = proto.graph
    stored = [i for i in graph.input if i.name not in input_names]
    if any(i.name not in tensors for i in stored):
        path.unlink()
        return None
    data_path = path.with_name(path.name + ".data")
    placed: list[tuple[int, np.ndarray]] = []  # (offset, bytes) of each tensor in the data file
    offset = 0
    for graph_input in stored:
        tensor = tensors[graph_input.name].detach().contiguous().cpu()
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
    kept = [i for i in graph.input if i.name in input_names]
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
