"""``tracewire demo``: the README's second command."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Any

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
    preview = None if no_serve else _PreviewServer(port)
    try:
        report = run_demo(settings, on_first_graph=preview.start if preview else None)
    finally:
        if preview is not None:
            preview.stop()
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
        if reading.get("groups") or reading.get("refuted"):
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


class _PreviewServer:
    """A read-only explorer over the graphs written so far, up from the first graph until the demo
    ends; the full server (feature cards, steering, attribution from the page) then takes the port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self, graphs_dir: Path) -> None:
        import uvicorn

        from tracewire.server import create_app, serving

        app = create_app(graphs_dir, read_only=True)
        self.server = uvicorn.Server(
            serving.server_config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="demo-preview", daemon=True)
        self.thread.start()
        typer.echo(
            f"first graph ready: http://127.0.0.1:{self.port}/ (preview; feature cards and the other graphs "
            "follow, reload the page when the demo prints its summary)"
        )

    def stop(self) -> None:
        if self.server is None or self.thread is None:
            return
        self.server.should_exit = True
        self.thread.join(timeout=30)
