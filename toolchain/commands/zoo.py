"""`toolchain zoo list`: the bundled model zoo with example input shapes."""

from __future__ import annotations

import json

import click

from toolchain.commands.options import json_option


@click.group("zoo")
def zoo() -> None:
    """The bundled model zoo."""


@zoo.command("list")
@json_option
def zoo_list(as_json: bool) -> None:
    """List zoo models with their example input shapes."""
    from toolchain.models import get_model_spec, list_models

    rows = [get_model_spec(n) for n in list_models()]
    if as_json:
        click.echo(json.dumps([{"name": s.name, "input_shape": list(s.input_shape), "task": s.task} for s in rows]))
        return
    for s in rows:
        click.echo(f"zoo:{s.name:<16} {'x'.join(map(str, s.input_shape)):<14} {s.description}")
