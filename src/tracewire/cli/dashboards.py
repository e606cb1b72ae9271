"""CLI: ``tracewire dashboards`` (build, ``export``) and ``tracewire feature`` (print one card).

Thin wrappers over :mod:`tracewire.dashboards`; heavy imports (torch, the model) happen inside the
commands, and ``tracewire feature`` never imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import typer

from tracewire.cli.common import DTYPES, fail_cleanly, parse_dtype

dashboards_app = typer.Typer(
    help="Feature dashboards: build a feature store from a corpus sample, export feature JSON.",
    invoke_without_command=True,
    no_args_is_help=True,
)


def _logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@dashboards_app.callback()
@fail_cleanly
def dashboards_build(
    ctx: typer.Context,
    output: Path = typer.Option(None, "-o", "--output", help="Feature store to write (.sqlite)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model alias, folder, .gguf or hub id."),
    transcoders: str = typer.Option(
        None,
        "--transcoders",
        "-t",
        help="Transcoder folder, hub ref or preset (default for smollm2-135m: shipped).",
    ),
    corpus: Path = typer.Option(None, "--corpus", help="Token corpus (default: the model's default corpus)."),
    tokens: int = typer.Option(1_000_000, "--tokens", min=1, help="Corpus tokens to read (whole windows)."),
    features: str = typer.Option(None, "--features", help="Only these features: 'L:F,L:A-B,L:*,L'."),
    graph: list[Path] = typer.Option(
        None, "--graph", help="Only the feature nodes of this graph (repeatable)."
    ),
    layers: str = typer.Option(None, "--layers", help="Split: only layers A-B (inclusive) or A:B."),
    feature_range: str = typer.Option(None, "--feature-range", help="Split: only feature ids A-B or A:B."),
    seq_len: int = typer.Option(128, "--seq-len", help="Corpus window length (BOS included)."),
    batch_windows: int = typer.Option(16, "--batch-windows", min=1, help="Windows per model forward."),
    top: int = typer.Option(16, "--top", help="Top-activating examples per feature."),
    quantiles: int = typer.Option(5, "--quantiles", help="Activation-quantile groups."),
    per_quantile: int = typer.Option(5, "--per-quantile", help="Examples per quantile group."),
    context_before: int = typer.Option(
        15, "--context-before", help="Tokens shown before an example's token."
    ),
    context_after: int = typer.Option(8, "--context-after", help="Tokens shown after it."),
    seed: int = typer.Option(0, "--seed", help="Seed of the quantile groups' reservoir sample."),
    dtype: str = typer.Option("fp32", "--dtype", help=f"One of {', '.join(DTYPES)}."),
    device: str = typer.Option("cpu", "--device"),
    checkpoint_minutes: float = typer.Option(10.0, "--checkpoint-minutes", help="Checkpoint interval."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or log lines."),
) -> None:
    """Build (or resume, or extend) a feature store: one pass over the corpus for all selected features.

    Re-running the same command resumes an interrupted build; features already in the store are
    skipped, so jobs split with --layers / --feature-range can fill one store.
    """
    if ctx.invoked_subcommand is not None:
        return
    if output is None:
        raise typer.BadParameter("building a feature store needs --output")
    from tracewire.cli.common import transcoders_or_default

    transcoders = transcoders_or_default(transcoders, model)
    _logging(not quiet)
    from tracewire.corpus import TokenCorpus, default_corpus_dir
    from tracewire.dashboards import DashboardConfig, FeatureSelection, build_feature_store
    from tracewire.dashboards.selection import parse_range
    from tracewire.models.loading import load_model
    from tracewire.transcoders.io import load_transcoders

    if features and graph:
        raise typer.BadParameter("give --features or --graph, not both")
    try:
        config = DashboardConfig(
            seq_len=seq_len, n_top=top, n_quantiles=quantiles, per_quantile=per_quantile,
            context_before=context_before, context_after=context_after, seed=seed,
        )  # fmt: skip
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    torch_dtype = parse_dtype(dtype)
    corpus_dir = corpus or default_corpus_dir(model)
    token_corpus = TokenCorpus(corpus_dir)
    loaded = load_model(model, dtype=torch_dtype, device=device)
    ts = load_transcoders(
        transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model, device=device, dtype=torch_dtype
    )
    if features:
        selection = FeatureSelection.parse(features)
    elif graph:
        selection = FeatureSelection.from_graphs(graph)
    else:
        selection = FeatureSelection.all(ts.n_layers)
    layer_range, id_range = parse_range(layers, "--layers"), parse_range(feature_range, "--feature-range")
    if layer_range is not None or id_range is not None:
        selection = selection.restrict(layer_range, id_range, d_transcoder=ts.d_transcoder)
    report = build_feature_store(
        loaded, ts, token_corpus, output, tokens=tokens, selection=selection, config=config,
        batch_windows=batch_windows, checkpoint_seconds=60 * checkpoint_minutes, progress=not quiet,
        names={"model": model, "transcoders": transcoders, "corpus": str(Path(corpus_dir).resolve())},
    )  # fmt: skip
    typer.echo(report.summary())


@dashboards_app.command("export")
@fail_cleanly
def dashboards_export(
    store: Path = typer.Option(..., "--store", "-s", help="Feature store (.sqlite)."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory for the {index}.json files."),
    graph: list[Path] = typer.Option(
        None, "--graph", "-g", help="Export this graph's feature nodes (repeatable)."
    ),
    all_features: bool = typer.Option(False, "--all", help="Export every feature in the store."),
) -> None:
    """Write Anthropic/Neuronpedia feature JSON: one {index}.json per feature, index = Cantor(layer, feature).

    Serve the directory and set the graph JSON's metadata.feature_details.feature_json_base_url to its URL.
    """
    from tracewire.dashboards import FeatureStore
    from tracewire.dashboards.export import export_feature_json, graph_features

    if bool(graph) == all_features:
        raise typer.BadParameter("give --graph (repeatable) or --all")
    with FeatureStore(store, readonly=True) as feature_store:
        wanted = graph_features(graph) if graph else None
        written, missing = export_feature_json(feature_store, out, wanted)
    typer.echo(f"wrote {len(written)} feature files to {out}")
    if missing:
        shown = ", ".join(f"L{layer}:{feature}" for layer, feature in missing[:10])
        typer.echo(
            f"{len(missing)} features have no card in {store}: {shown}{' ...' if len(missing) > 10 else ''}"
        )


@fail_cleanly
def feature_command(
    layer: int = typer.Argument(..., help="Layer of the feature."),
    feature: int = typer.Argument(..., help="Feature id within the layer."),
    store: Path = typer.Option(..., "--store", "-s", help="Feature store (.sqlite)."),
    label: str = typer.Option(None, "--label", help="Set the user label (overrides the automatic one)."),
    clear_label: bool = typer.Option(False, "--clear-label", help="Remove the user label."),
    as_json: bool = typer.Option(False, "--json", help="Print the card's JSON instead."),
    color: bool = typer.Option(None, "--color/--no-color", help="Colour (default: on a terminal)."),
    examples: int = typer.Option(3, "--examples", help="Examples shown per quantile group."),
) -> None:
    """Print the card of feature FEATURE of layer LAYER, activating tokens highlighted."""
    from tracewire.dashboards import FeatureStore, render_card

    writes = label is not None or clear_label
    with FeatureStore(store, readonly=not writes) as feature_store:
        if writes:
            feature_store.set_label(layer, feature, None if clear_label else label)
        card = feature_store.card(layer, feature)
    if card is None:
        typer.secho(f"error: {store} has no card for layer {layer} feature {feature}", err=True, fg="red")
        raise typer.Exit(code=1)
    if as_json:
        typer.echo(json.dumps(card.to_json(), ensure_ascii=False, indent=1))
        return
    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    typer.echo(render_card(card, color=color, per_group=examples))
