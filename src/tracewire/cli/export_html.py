"""``tracewire export-html GRAPH -o paris.html``: one self-contained HTML file to share a graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracewire.cli.common import fail_cleanly


@fail_cleanly
def export_html_command(
    graph: Annotated[Path, typer.Argument(help="A graph: .safetensors, or Neuronpedia .json / .json.gz.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    features: Annotated[
        Path | None, typer.Option("--features", help="Feature store (features.sqlite) whose cards to embed.")
    ] = None,
    node_threshold: Annotated[
        float | None,
        typer.Option("--node-threshold", help="Prune to this cumulative influence (default: fit --max-mb)."),
    ] = None,
    edge_threshold: Annotated[
        float | None, typer.Option("--edge-threshold", help="Edge pruning threshold (default 0.98).")
    ] = None,
    max_mb: Annotated[
        float,
        typer.Option("--max-mb", help="Size budget: without --node-threshold, prune until the file fits."),
    ] = 5.0,
) -> None:
    """Write GRAPH as ONE HTML file (explorer, pruned graph, feature cards) that opens from disk offline."""
    from tracewire.export import export_html

    result = export_html(
        graph,
        output,
        features=features,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        max_bytes=int(max_mb * 1024 * 1024),
    )
    typer.echo(result.summary())
