"""`toolchain targets`: the deployment devices of the device table, with aliases and roofline facts."""

from __future__ import annotations

import json

import click

from toolchain.commands.options import json_option


@click.command("targets")
@json_option
def targets(as_json: bool) -> None:
    """List deployment devices from the device table (with aliases and roofline facts)."""
    from toolchain.targets.devices import ALIASES, get_device, list_devices

    devices = [get_device(n) for n in list_devices()]
    if as_json:
        click.echo(json.dumps([{"name": d.name, "description": d.description, "cpu_triple": d.cpu_triple,
                                "cuda_sm": d.cuda_sm, "peak_flops_per_s": dict(d.peak_flops_per_s),
                                "memory_bandwidth_gb_per_s": d.memory_bandwidth_gb_per_s,
                                "aliases": sorted(a for a, t in ALIASES.items() if t == d.name)} for d in devices]))
        return
    for d in devices:
        aliases = sorted(a for a, t in ALIASES.items() if t == d.name)
        alias_text = f" (alias: {', '.join(aliases)})" if aliases else ""
        click.echo(f"{d.name:<14} {d.cpu_triple:<20} {d.cuda_sm or '-':<7} {d.description}{alias_text}")
