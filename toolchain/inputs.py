"""Example inputs and model outputs of any shape: one tensor, several positional, or named inputs.

A model's example input is `ModelInputs`: a tensor (`model(x)`), a tuple (`model(*xs)`) or a dict
of named tensors (`model(**kw)`, e.g. `input_ids` and `attention_mask`). Outputs come back as any
nest of tensors, tuples, lists, dicts, dataclasses and Hugging Face `ModelOutput`s; every place that
compares, protects or exports outputs sees them through `flatten_outputs`, in one fixed order.

>>> flatten_outputs({"logits": torch.zeros(1, 2), "aux": (torch.ones(3), None)})[1].shape
torch.Size([3])
>>> call_model(torch.nn.Identity(), torch.ones(2)).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.errors import ToolchainError
from toolchain.user_code import describe_exit

ModelInputs = torch.Tensor | tuple | dict


def call_model(model: nn.Module, inputs: ModelInputs):
    """Run `model` on example inputs of any of the three forms."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def run_checked(model: nn.Module, inputs: ModelInputs):
    """The model's outputs on `inputs` in eval mode without gradients; a one-line error if it rejects them
    (`the model rejects input shape (1, 4): RuntimeError: mat1 and mat2 shapes cannot be multiplied ...`).

    >>> run_checked(torch.nn.Linear(2, 3), torch.ones(1, 2)).shape
    torch.Size([1, 3])
    """
    try:
        with torch.no_grad():
            return call_model(model.eval(), inputs)
    except (KeyboardInterrupt, ToolchainError):
        raise
    except BaseException as exc:  # noqa: BLE001 - a user's forward may even call sys.exit (see user_code)
        what = "inputs" if isinstance(inputs, dict) else "input shape"
        raise ToolchainError(f"the model rejects {what} {_describe(inputs)}: {describe_exit(exc)}") from exc


def _describe(inputs: ModelInputs) -> str:
    if isinstance(inputs, dict):
        return ", ".join(f"{name} {tuple(t.shape)}" for name, t in inputs.items())
    shapes = [tuple(t.shape) for t in input_tensors(inputs)]
    return str(shapes[0]) if len(shapes) == 1 else ", ".join(map(str, shapes))


def input_tensors(inputs: ModelInputs) -> list[torch.Tensor]:
    """The input tensors in call order (dict inputs in their insertion order)."""
    if isinstance(inputs, dict):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def input_names(inputs: ModelInputs) -> list[str]:
    """Names for the inputs: the dict's keys, else `input` / `input_0`, `input_1`, ..."""
    if isinstance(inputs, dict):
        return list(inputs)
    tensors = input_tensors(inputs)
    return ["input"] if len(tensors) == 1 else [f"input_{i}" for i in range(len(tensors))]


def batch_size(inputs: ModelInputs) -> int:
    """The leading dimension of the first input (the batch of every example input here)."""
    first = input_tensors(inputs)[0]
    return int(first.shape[0]) if first.dim() else 1


def flatten_outputs(output) -> list[torch.Tensor]:
    """Every tensor in an output nest, in a fixed order (dicts and ModelOutputs in insertion order).

    The order matches what `torch.onnx.export` produces for the same nest, so flattened PyTorch
    outputs and ONNX outputs can be compared pairwise.
    """
    if isinstance(output, torch.Tensor):
        return [output]
    if output is None or isinstance(output, (str, bytes, int, float, bool)):
        return []
    if isinstance(output, dict):  # includes transformers' ModelOutput (an OrderedDict of non-None fields)
        return [t for value in output.values() for t in flatten_outputs(value)]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flatten_outputs(item)]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return [t for f in dataclasses.fields(output) for t in flatten_outputs(getattr(output, f.name))]
    return []


def output_shapes(output) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in flatten_outputs(output)]


def output_names(output) -> list[str]:
    """Deterministic names for `flatten_outputs(output)`, pairwise: dict keys and positions joined by `.`.

    One tensor is `output`; `{"logits": t}` is `logits`; `(a, (b, c))` is `output.0`, `output.1.0`, ...
    """
    names: list[str] = []

    def walk(value, path: str) -> None:
        if isinstance(value, torch.Tensor):
            names.append(path or "output")
        elif value is None or isinstance(value, (str, bytes, int, float, bool)):
            return
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}.{i}" if path else f"output.{i}")
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)

    walk(output, "")
    return names


# dtypes a user may type after `--input NAME:`; the names are torch's, as they appear in ONNX too.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
}
# Name of the one positional float input `--input-shape` makes (and of its ONNX input).
DEFAULT_INPUT_NAME = "input"


@dataclass(frozen=True)
class InputSpec:
    """One named model input: `input_ids:int64:1,128` on the command line.

    >>> InputSpec.parse("attention_mask:int64:1,128")
    InputSpec(name='attention_mask', dtype='int64', shape=(1, 128))
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"input name {self.name!r} is not a Python identifier (it is a forward() argument)")
        if self.dtype not in DTYPES:
            raise ValueError(f"input dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not self.shape or any(not isinstance(d, int) or d <= 0 for d in self.shape):
            raise ValueError(f"input shape {self.shape!r} is not a shape of positive sizes like 1,128")

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """`NAME:DTYPE:D0,D1,...`; raises ValueError naming the text otherwise."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"{text!r} is not NAME:DTYPE:SHAPE like input_ids:int64:1,128")
        name, dtype, shape_text = (p.strip() for p in parts)
        try:
            shape = tuple(int(d) for d in shape_text.replace("x", ",").split(","))
        except ValueError:
            raise ValueError(f"{text!r}: shape {shape_text!r} is not like 1,128") from None
        try:
            return cls(name, dtype, shape)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None

    @classmethod
    def float_input(cls, shape: tuple[int, ...]) -> InputSpec:
        """The one positional float tensor of `--input-shape`."""
        return cls(DEFAULT_INPUT_NAME, "float32", tuple(int(d) for d in shape))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def text(self) -> str:
        return f"{self.name}:{self.dtype}:{','.join(map(str, self.shape))}"


InputSpecs = tuple[InputSpec, ...]


def specs_to_json(specs: InputSpecs) -> list[dict]:
    return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in specs]


def specs_from_json(rows: list[dict]) -> InputSpecs:
    return tuple(InputSpec(str(r["name"]), str(r["dtype"]), tuple(int(d) for d in r["shape"])) for r in rows)


def is_single_float(specs: InputSpecs) -> bool:
    """True for the classic one positional float tensor (called `model(x)`, named `input`)."""
    return len(specs) == 1 and specs[0].name == DEFAULT_INPUT_NAME and specs[0].torch_dtype.is_floating_point


def specs_key(specs: InputSpecs) -> tuple:
    """What identifies inputs in stored results (the latency store, predictors): the bare shape for one
    float tensor (the format every older store and predictor uses), else one `name:dtype:shape` per input.

    >>> specs_key((InputSpec("input_ids", "int64", (1, 8)),))
    ('input_ids:int64:1,8',)
    """
    return tuple(specs[0].shape) if is_single_float(specs) else tuple(s.text() for s in specs)


def specs_from_key(key) -> InputSpecs:
    """The inverse of `specs_key`: a shape of ints, or `name:dtype:shape` texts."""
    key = tuple(key)
    if key and all(isinstance(d, str) for d in key):
        return tuple(InputSpec.parse(text) for text in key)
    return (InputSpec.float_input(tuple(int(d) for d in key)),)


def key_batch(key) -> int:
    """The batch (leading dimension of the first input) an inputs key stands for."""
    return specs_from_key(key)[0].shape[0]


def inputs_to(inputs: ModelInputs, device) -> ModelInputs:
    """The same inputs on `device` (for CUDA timing)."""
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(t.to(device) for t in inputs)
    return inputs.to(device)


class KeywordCall(nn.Module):
    """Calls a model with named inputs given positionally, so a traced or exported graph's inputs are
    exactly those tensors (exporters would otherwise also turn defaulted keyword arguments into inputs)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor):
        return self.model(**dict(zip(self.names, tensors, strict=True)))


def as_positional(model: nn.Module, inputs: ModelInputs) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A module and positional arguments that run `model` on `inputs` (what exporters take)."""
    module = KeywordCall(model, list(inputs)) if isinstance(inputs, dict) else model
    return module, tuple(input_tensors(inputs))


def specs_of(inputs: ModelInputs) -> InputSpecs:
    """The specs describing example inputs (names as `input_names` gives them)."""
    tensors = input_tensors(inputs)
    if isinstance(inputs, torch.Tensor):
        return (InputSpec(DEFAULT_INPUT_NAME, _dtype_name(inputs.dtype), tuple(inputs.shape)),)
    return tuple(InputSpec(n, _dtype_name(t.dtype), tuple(t.shape)) for n, t in zip(input_names(inputs), tensors,
                                                                                   strict=True))


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"inputs of dtype {dtype} are not supported; use one of {', '.join(DTYPES)}")


def _integer_input(spec: InputSpec, vocab_size: int | None, generator: torch.Generator) -> torch.Tensor:
    name = spec.name.lower()
    if "mask" in name:  # attention/padding masks: attend to everything
        return torch.ones(spec.shape, dtype=spec.torch_dtype)
    if "token_type" in name or "position" in name:  # segment 0 / positions are read from a small table
        return torch.zeros(spec.shape, dtype=spec.torch_dtype)
    # Unknown vocabulary: only 0 and 1, which every embedding table has.
    return torch.randint(0, vocab_size or 2, spec.shape, generator=generator, dtype=spec.torch_dtype)


def make_inputs(specs: InputSpecs, vocab_size: int | None = None, seed: int = 0) -> ModelInputs:
    """Example tensors for `specs`: floats ~N(0, 1), token ids inside the vocabulary, masks all ones.

    The classic single float input comes back as a tensor (`model(x)`), anything else as a dict
    (`model(**inputs)`).
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for spec in specs:
        if spec.torch_dtype == torch.bool:
            tensors[spec.name] = torch.ones(spec.shape, dtype=torch.bool)
        elif spec.torch_dtype.is_floating_point:
            tensors[spec.name] = torch.randn(spec.shape, generator=generator).to(spec.torch_dtype)
        else:
            tensors[spec.name] = _integer_input(spec, vocab_size, generator)
    return tensors[DEFAULT_INPUT_NAME] if is_single_float(specs) else tensors


def random_like(inputs: ModelInputs, generator: torch.Generator) -> ModelInputs:
    """Fresh inputs of the same form for verification: floats ~N(0, 1), integers drawn within the range
    the example holds (so token ids stay inside the vocabulary and all-ones masks stay ones), bools kept."""

    def fresh(t: torch.Tensor) -> torch.Tensor:
        if t.dtype.is_floating_point:
            return torch.randn(t.shape, generator=generator).to(t.dtype)
        if t.dtype == torch.bool or t.numel() == 0:
            return t.clone()
        low, high = int(t.min()), int(t.max())
        return torch.randint(low, high + 1, t.shape, generator=generator, dtype=t.dtype)

    if isinstance(inputs, dict):
        return {k: fresh(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(fresh(t) for t in inputs)
    return fresh(inputs)


def vocab_size_of(model: nn.Module) -> int | None:
    """The token vocabulary a model declares (Hugging Face `config.vocab_size`), if any."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else None
