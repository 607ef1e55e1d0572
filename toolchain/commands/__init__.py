"""The `toolchain` commands, one module each; `toolchain.cli` registers them.

`options` defines every option once (in groups: model, target/timing, pruning, budget, output), `console`
what commands print besides their result, `validation` the range-checked number types.
"""
