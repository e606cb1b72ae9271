"""``tracewire presets``: the published transcoder sets that ``--transcoders NAME`` accepts."""

from __future__ import annotations

import typer


def presets_command() -> None:
    """List transcoder presets: name, hub repository, the model it belongs to, what it is."""
    from tracewire.transcoders.presets import ALIASES, PRESETS

    for preset in PRESETS:
        typer.echo(
            f"{preset.name:15s} {preset.repo:40s} {preset.model:24s} {preset.kind}: {preset.description}"
        )
    typer.echo("aliases: " + ", ".join(f"{alias} = {name}" for alias, name in sorted(ALIASES.items())))
    typer.echo(
        "Use: tracewire attribute PROMPT -t NAME -o graph.safetensors  (--model defaults to the set's model)"
    )
