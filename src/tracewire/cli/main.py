"""The ``tracewire`` command line.

Each subcommand is a typed function; typer turns signatures and docstrings into ``--help``.
Heavy imports (torch, transformers) happen inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

import os

# Set before anything loads torch (libgomp reads it once, when it is loaded): OpenMP threads that
# finish a parallel region sleep instead of spinning for the next one, so a thread never burns the
# CPU that a neighbour process — or our own main thread — needs. Measured with
# ``benchmarks/busy_neighbour.py`` on a 2-CPU box (results/busy-neighbour-passive.json against
# results/busy-neighbour.json): faster quiet (attribution 0.93 vs 1.25 s, training step 3.78 vs
# 4.73 s, dashboards 4.53 vs 5.25 s) and under a busy neighbour (attribution 1.49 vs 3.59 s). A
# user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from tracewire._version import __version__
from tracewire.cli.common import set_debug, wrap_every_command

app = typer.Typer(
    name="tracewire",
    help="Circuit tracing for language models: transcoders, attribution graphs, dashboards, interventions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tracewire {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of errors (normally one line) for bug reports."
    ),
) -> None:
    """tracewire: see how a language model produced its next token."""
    set_debug(debug)


@app.command()
def models() -> None:
    """List the architectures tracewire supports (the adapter table) and the embedded model."""
    from tracewire.models.adapters import ADAPTERS
    from tracewire.models.loading import EMBEDDED_ALIASES

    for row in ADAPTERS:
        typer.echo(
            f"{row.name:8s} model_type={','.join(row.model_types):20s} norms={row.norm_kind:10s} {row.notes}"
        )
    typer.echo("embedded aliases: " + ", ".join(EMBEDDED_ALIASES))


# -- subcommands from their own modules (imports are light: heavy ones happen inside) ---------
from tracewire.cli.attribute import attribute_command, estimate_command  # noqa: E402

app.command("attribute")(attribute_command)
app.command("estimate")(estimate_command)


from tracewire.cli.intervene import evaluate_command, intervene_command  # noqa: E402

app.command("intervene")(intervene_command)
app.command("evaluate")(evaluate_command)


from tracewire.cli.train import corpus_app, eval_transcoders, train  # noqa: E402

app.add_typer(corpus_app, name="corpus")
app.command("train")(train)
app.command("eval-transcoders")(eval_transcoders)


from tracewire.cli.serve import serve_command  # noqa: E402

app.command("serve")(serve_command)

from tracewire.cli.export_html import export_html_command  # noqa: E402

app.command("export-html")(export_html_command)

from tracewire.cli.presets import presets_command  # noqa: E402

app.command("presets")(presets_command)


from tracewire.cli.graph import prune_command, scores_command  # noqa: E402

app.command("prune")(prune_command)
app.command("scores")(scores_command)

from tracewire.cli.demo import demo_command  # noqa: E402

app.command("demo")(demo_command)


from tracewire.cli.dashboards import dashboards_app, feature_command  # noqa: E402

app.add_typer(dashboards_app, name="dashboards")
app.command("feature")(feature_command)

from tracewire.cli.batch import aggregate_command, batch_app, compare_command  # noqa: E402

app.add_typer(batch_app, name="batch")
app.command("compare")(compare_command)
app.command("aggregate")(aggregate_command)


from tracewire.cli.qk import heads_command, qk_command  # noqa: E402

app.command("qk")(qk_command)
app.command("heads")(heads_command)

# Every command prints expected errors as one line (exit code 2); ``--debug`` shows the traceback.
wrap_every_command(app)


if __name__ == "__main__":  # pragma: no cover
    app()
