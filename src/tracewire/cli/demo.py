"""``tracewire demo``: the README's second command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tracewire.cli.common import fail_cleanly


@fail_cleanly
def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where graphs, features and the report go.")
    ] = Path("tracewire-demo"),
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Stop after writing; do not start the UI.")
    ] = False,
    fast: Annotated[
        bool, typer.Option("--fast", help="Tiny settings (CI): small corpus, tiny transcoders.")
    ] = False,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Train the fast default set (~15 min on 2 cores) instead of using the shipped one.",
        ),
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Port of the UI.")] = 8046,
    max_feature_nodes: Annotated[
        int | None, typer.Option("--max-feature-nodes", help="Feature budget per graph.")
    ] = None,
) -> None:
    """Attribute showcase prompts on SmolLM2-135M (shipped transcoders), read and check them, serve the UI."""
    from tracewire.demo.pipeline import DemoSettings, run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = DemoSettings.fast_settings(out) if fast else DemoSettings(out_dir=out)
    settings.train = train
    if max_feature_nodes is not None:
        settings.max_feature_nodes = max_feature_nodes
    report = run_demo(settings)
    typer.echo("")
    typer.echo(
        f"{'graph':16s} {'top target':>14s} {'feats':>6s} {'repl':>6s} {'compl':>6s} "
        f"{'pruned r/c':>12s} {'faith r (frozen/unfrozen)':>26s}"
    )
    for slug, row in report["graphs"].items():
        top = row["targets"][0] if row["targets"] else {"token": "-", "p": 0.0}
        faith = row["faithfulness"]
        frozen = _num(faith.get("frozen_constrained", {}).get("correlation"))
        unfrozen = _num(faith.get("unfrozen", {}).get("correlation"))
        typer.echo(
            f"{slug:16s} {top['token']!r:>10s} {top['p']:.2f} {row['features']:6d} {row['replacement']:6.3f} "
            f"{row['completeness']:6.3f} {row['pruned_replacement']:5.3f}/{row['pruned_completeness']:5.3f} "
            f"{frozen:>12s}/{unfrozen:<12s}"
        )
    for slug, row in report["graphs"].items():
        reading = row.get("reading") or {}
        if reading.get("groups"):
            typer.echo("")
            typer.echo(f"[{slug}] {reading['text']}")
    timings = report["timings"]
    typer.echo(
        f"report: {out / 'report.json'}; graphs: {out / 'graphs'}; first graph after "
        f"{timings.get('first_graph', float('nan')):.0f}s, total {timings['total']:.0f}s"
    )
    if no_serve:
        return
    from tracewire.cli.serve import serve_command

    features = out / "features.sqlite"
    serve_command(
        out / "graphs",
        port=port,
        features=features if features.exists() else None,
        model="smollm2-135m",
        transcoders=report["transcoders"],
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
