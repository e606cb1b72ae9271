"""``tracewire prune`` and ``tracewire scores``: work on a saved attribution graph.

- ``prune``: cumulative-influence pruning (circuit-tracer §2.6) of a graph file, written as
  Neuronpedia JSON plus the folder's ``graph-metadata.json``; prints what was kept and the pruned
  graph's scores. Those are the scores of the kept node subset with every removed feature folded
  into its error node (landscape Appendix C), i.e. the numbers the viewer shows for it.
- ``scores``: replacement / completeness of the whole graph, or of a node subset given as node
  indices or Neuronpedia node ids (``3_117_5`` = layer 3, feature 117, position 5).

Graph files are read by suffix: ``.safetensors`` (tracewire), ``.json`` / ``.json.gz``
(Neuronpedia JSON) or ``.pt`` (circuit-tracer, read without executing pickled code).
Torch is imported inside the commands so ``tracewire --help`` stays instant.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tracewire.cli.common import fail_cleanly

if TYPE_CHECKING:
    from tracewire.graph import Graph, PruneResult, Scores

logger = logging.getLogger(__name__)

GraphArgument = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        readable=True,
        help="Graph file: .safetensors (tracewire), .json / .json.gz (Neuronpedia) or .pt (circuit-tracer).",
    ),
]


@fail_cleanly
def prune_command(
    graph_path: GraphArgument,
    node_threshold: Annotated[
        float,
        typer.Option(
            "--node-threshold", min=0.0, max=1.0, help="Keep nodes covering this fraction of influence."
        ),
    ] = 0.8,
    edge_threshold: Annotated[
        float,
        typer.Option(
            "--edge-threshold", min=0.0, max=1.0, help="Keep edges covering this fraction of edge influence."
        ),
    ] = 0.98,
    json_dir: Annotated[
        Path | None,
        typer.Option(
            "--json",
            file_okay=False,
            help="Write the pruned graph here as Neuronpedia JSON and update graph-metadata.json.",
        ),
    ] = None,
    slug: Annotated[
        str | None,
        typer.Option("--slug", help="Graph name in the viewer and file name (default: the graph's)."),
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write SLUG.json.gz instead of SLUG.json.")] = False,
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Feature store (features.sqlite) whose labels become node clerps."),
    ] = None,
) -> None:
    """Prune GRAPH_PATH by cumulative influence; print what is kept and the pruned graph's scores.

    Without --json nothing is written, which is handy for trying thresholds.
    """
    from tracewire.graph import ScoreContext, prune_graph, write_graph_files

    if json_dir is None and (slug is not None or gzip or features is not None):
        raise typer.BadParameter("--slug, --gzip and --features only apply with --json OUT_DIR")
    slug = slug if slug is not None else _default_slug(graph_path)
    if json_dir is not None:
        written = json_dir / f"{slug}.json{'.gz' if gzip else ''}"
        if written.resolve() == graph_path.resolve():
            raise typer.BadParameter(
                f"{written} is the input graph; writing it would replace it (give another --slug or --json)"
            )
    graph = load_graph_file(graph_path)
    labels = _feature_labels(features)  # before the work, so a bad store fails fast
    result = prune_graph(graph, node_threshold, edge_threshold)
    context = ScoreContext(graph)
    _echo_kept(graph, result)
    _echo_scores("full graph", context.graph_scores())
    _echo_scores("pruned graph", context.subgraph_scores(result.node_mask))
    if json_dir is None:
        typer.echo("(no --json OUT_DIR given: nothing written)")
        return
    path = write_graph_files(
        graph,
        slug,
        json_dir,
        gzip=gzip,
        prune=result,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        feature_labels=labels,
    )
    typer.echo(f"wrote {path} (and {json_dir / 'graph-metadata.json'})")


@fail_cleanly
def scores_command(
    graph_path: GraphArgument,
    subgraph: Annotated[
        list[str] | None,
        typer.Option(
            "--subgraph",
            "-s",
            help=(
                "Node of the subset to score: a node index or a Neuronpedia node id like 3_117_5. "
                "Repeat it, or list more nodes after the graph: --subgraph 3_117_5 0_4_1 12."
            ),
        ),
    ] = None,
    more_nodes: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NODE_ID]...", help="More nodes of the subset (same forms as --subgraph)."),
    ] = None,
) -> None:
    """Replacement and completeness of GRAPH_PATH, and of a node subset if one is given.

    For a subset, each feature outside it is folded into the error node at its own (layer, position).

    Error, token and logit nodes are always present, so naming them changes nothing.
    """
    from tracewire.graph import ScoreContext

    requested = [*(subgraph or []), *(more_nodes or [])]
    graph = load_graph_file(graph_path)
    indices = resolve_nodes(graph, requested) if requested else None
    context = ScoreContext(graph)
    typer.echo(f"graph: {graph.n_nodes} nodes ({graph.n_features} features), {graph.n_edges} edges")
    _echo_scores("full graph", context.graph_scores())
    if indices is None:
        return
    n_features = sum(1 for index in indices if index < graph.n_features)
    ignored = len(indices) - n_features
    if ignored:
        typer.echo(f"note: {ignored} non-feature node(s) given; errors, tokens and logits are always present")
    _echo_scores(f"subgraph ({n_features} of {graph.n_features} features)", context.subgraph_scores(indices))


def load_graph_file(path: Path) -> Graph:
    """Read a graph by its suffix (see the module docstring); GraphFormatError if unreadable."""
    from tracewire.graph import Graph, from_neuronpedia_json, load_circuit_tracer_pt

    name = path.name.lower()
    if name.endswith((".json", ".json.gz")):
        return from_neuronpedia_json(path)
    if name.endswith(".pt"):
        return load_circuit_tracer_pt(path)
    if not name.endswith(".safetensors"):
        logger.info("%s: unknown suffix, reading it as a tracewire .safetensors graph", path)
    return Graph.load(path)


def resolve_nodes(graph: Graph, values: Sequence[str]) -> list[int]:
    """Node indices of ``values`` (node indices or Neuronpedia node ids), in order, without repeats.

    Raises typer.BadParameter naming the first value that is neither, with close matches.
    """
    from tracewire.graph.neuronpedia_ids import node_ids

    ids = node_ids(graph)
    by_id = {node_id: index for index, node_id in enumerate(ids)}
    indices: dict[int, None] = {}
    for value in values:
        text = value.strip()
        if text.isdigit():
            index = int(text)
            if index >= graph.n_nodes:
                raise typer.BadParameter(
                    f"node index {index} is outside 0..{graph.n_nodes - 1}", param_hint="--subgraph"
                )
        elif text in by_id:
            index = by_id[text]
        else:
            close = difflib.get_close_matches(text, ids, n=3)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise typer.BadParameter(
                f"{value!r} is neither a node index nor a node id of this graph "
                f"(feature ids read layer_feature_position, e.g. {ids[0]!r}){hint}",
                param_hint="--subgraph",
            )
        indices[index] = None
    return list(indices)


def _echo_kept(graph: Graph, result: PruneResult) -> None:
    kept_nodes = int(result.node_mask.sum())
    kept_features = int(result.node_mask[: graph.n_features].sum())
    kept_edges = int(result.edge_mask.sum())
    typer.echo(
        f"kept {kept_nodes} of {graph.n_nodes} nodes ({kept_features} of {graph.n_features} features), "
        f"{kept_edges} of {graph.n_edges} edges"
    )


def _echo_scores(what: str, scores: Scores) -> None:
    typer.echo(f"{what}: replacement {scores.replacement:.4f}, completeness {scores.completeness:.4f}")


def _default_slug(path: Path) -> str:
    name = path.name
    for suffix in (".safetensors", ".json.gz", ".json", ".pt"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _feature_labels(path: Path | None) -> Mapping[tuple[int, int], str] | None:
    """Labels from a feature store, or None when none is given or dashboards are not installed."""
    if path is None:
        return None
    try:
        from tracewire.dashboards import FeatureStore
    except ImportError as exc:
        typer.secho(
            f"warning: --features ignored: feature stores are not available in this install ({exc})",
            err=True,
            fg=typer.colors.YELLOW,
        )
        return None
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist", param_hint="--features")
    with FeatureStore(path, readonly=True) as store:
        labels = store.labels()
    typer.echo(f"{len(labels)} feature labels from {path}")
    return labels
