"""The `--input` and `--trust-pickle` options, one definition for every command that builds a model.

`--input NAME:DTYPE:SHAPE` (repeatable) names each forward() argument with its dtype and shape, e.g.
`--input input_ids:int64:1,128 --input attention_mask:int64:1,128`; `--input-shape` stays the shortcut
for one float tensor.
"""

from __future__ import annotations

import click

from toolchain.inputs import DTYPES, InputSpec, InputSpecs


def parse_inputs(_ctx, _param, values: tuple[str, ...]) -> InputSpecs:
    """click callback: every `--input` parsed strictly, names unique."""
    specs = []
    for text in values:
        try:
            specs.append(InputSpec.parse(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise click.BadParameter(f"input {repeated[0]!r} given more than once")
    return tuple(specs)


input_option = click.option(
    "--input", "inputs", multiple=True, callback=parse_inputs, metavar="NAME:DTYPE:SHAPE",
    help=f"a named model input, repeatable (dtype: {', '.join(DTYPES)}), e.g. input_ids:int64:1,128; "
         "integer ids are drawn inside the model's vocabulary, *mask inputs are all ones")
trust_pickle_option = click.option(
    "--trust-pickle", is_flag=True,
    help="allow pickle checkpoints (e.g. ultralytics:best.pt): loading one runs code it contains")
