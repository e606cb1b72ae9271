"""``tracewire qk`` and ``tracewire heads``: attention explanations of a saved graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tracewire.cli.common import fail_cleanly
from tracewire.errors import InvalidArgumentError

GraphArg = Annotated[Path, typer.Argument(help="A graph made by `tracewire attribute` (.safetensors).")]
TranscodersOpt = Annotated[
    str, typer.Option("--transcoders", "-t", help="The transcoders the graph was made with.")
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Model (default: the one named in the graph).")
]
SaveOpt = Annotated[
    bool, typer.Option("--save", help="Store the result in the graph file's attention section.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="fp32 or bf16.")]


@fail_cleanly
def qk_command(
    graph_path: GraphArg,
    layer: Annotated[int, typer.Option("--layer", "-l", help="Attention layer.")],
    head: Annotated[int, typer.Option("--head", help="Query head.")],
    query: Annotated[int, typer.Option("--query", "-q", help="Query position (-1: the last).")],
    transcoders: TranscodersOpt,
    key: Annotated[list[int] | None, typer.Option("--key", "-k", help="Key position (repeatable).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Without --key: the head's top keys by weight.")] = 3,
    n_pairs: Annotated[int, typer.Option("--pairs", help="Pairs and marginals to show per side.")] = 10,
    model: ModelOpt = None,
    save: SaveOpt = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the summaries as JSON here.")] = None,
    dtype: DtypeOpt = "fp32",
) -> None:
    """A head's attention score split into (query-side, key-side) node pairs, plus constants."""
    from tracewire.attention import TraceContext, qk_attribution, store_qk

    graph, loaded, ts = _load(graph_path, model, transcoders, dtype)
    position = query if query >= 0 else graph.n_pos + query
    ctx = TraceContext.build(graph, loaded, ts)
    results = qk_attribution(graph, ctx, layer=layer, head=head, query=position, keys=key, top_k=top_k)
    summaries = [r.to_json(n_pairs=n_pairs, n_marginals=n_pairs) for r in results]
    for summary in summaries:
        _print_qk(summary, graph.token_strings)
    if json_out is not None:
        from tracewire.atomic import atomic_write_json

        atomic_write_json(json_out, summaries)
    if save:
        store_qk(graph, results, n_pairs=max(n_pairs, 20), n_marginals=max(n_pairs, 20))
        graph.save(graph_path)
        typer.echo(f"stored {len(results)} QK attribution(s) in {graph_path}")


@fail_cleanly
def heads_command(
    graph_path: GraphArg,
    transcoders: TranscodersOpt,
    edge: Annotated[
        list[str] | None, typer.Option("--edge", "-e", help="TARGET:SOURCE node ids (repeatable).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every edge of the graph (prune it first).")] = False,
    top: Annotated[int, typer.Option("--top", help="Heads to show per edge.")] = 5,
    model: ModelOpt = None,
    save: SaveOpt = False,
    dtype: DtypeOpt = "fp32",
) -> None:
    """Graph edges split by attention head (a path counts for the last head it crosses)."""
    import torch

    from tracewire.attention import TraceContext, head_loadings, store_loadings

    graph, loaded, ts = _load(graph_path, model, transcoders, dtype)
    if every == bool(edge):
        raise InvalidArgumentError("give either --edge TARGET:SOURCE (repeatable) or --all")
    if every:
        chosen = torch.arange(graph.n_edges)
    else:
        chosen = torch.tensor([_edge_index(graph, text) for text in edge or []], dtype=torch.long)
    loadings = head_loadings(graph, TraceContext.build(graph, loaded, ts), edges=chosen)
    for row in range(min(int(chosen.numel()), 20)):
        t, s = int(loadings.targets[row]), int(loadings.sources[row])
        typer.echo(
            f"edge {s} -> {t}: {float(loadings.total[row]):+.4g} = direct {float(loadings.direct[row]):+.4g}"
            + "".join(f" + L{h['layer']}H{h['head']} {h['value']:+.4g}" for h in loadings.top_heads(row, top))
            + " + …"
        )
    if chosen.numel() > 20:
        typer.echo(f"... {int(chosen.numel()) - 20} more edges")
    if save:
        store_loadings(graph, loadings)
        graph.save(graph_path)
        typer.echo(f"stored head loadings of {int(chosen.numel())} edge(s) in {graph_path}")


def _load(graph_path: Path, model: str | None, transcoders: str, dtype: str) -> tuple[Any, Any, Any]:
    from tracewire.cli.intervene import _load as load_model_and_transcoders
    from tracewire.graph.graph import Graph

    graph = Graph.load(graph_path)
    spec = model or graph.metadata.get("model")
    if not spec:
        raise InvalidArgumentError(f"{graph_path} names no model in its metadata: pass --model")
    loaded, ts = load_model_and_transcoders(str(spec), transcoders, dtype, "cpu")
    return graph, loaded, ts


def _edge_index(graph: Any, text: str) -> int:
    try:
        target, source = (int(part) for part in text.split(":"))
    except ValueError:
        raise InvalidArgumentError(f"--edge {text!r}: expected TARGET:SOURCE node ids, e.g. 120:7") from None
    hits = ((graph.edge_targets == target) & (graph.edge_sources == source)).nonzero()
    if hits.numel() == 0:
        raise InvalidArgumentError(
            f"--edge {text!r}: the graph has no edge from node {source} to node {target}"
        )
    return int(hits[0, 0])


def _node_label(source: dict[str, Any], tokens: list[str]) -> str:
    kind, pos = source.get("kind"), int(source.get("pos", 0))
    at = f"@{pos} {json.dumps(tokens[pos]) if 0 <= pos < len(tokens) else ''}"
    if kind == "feature":
        return f"feature L{source['layer']}#{source['feature']} {at}"
    if kind == "error":
        return f"error L{source['layer']} {at}"
    return f"token {at}"


def _print_qk(summary: dict[str, Any], tokens: list[str]) -> None:
    q, k = summary["query"], summary["key"]
    capped = f" (softcapped {summary['capped_score']:.4g})" if summary["softcap"] else ""
    typer.echo(
        f"layer {summary['layer']} head {summary['head']} (reads kv head {summary['kv_head']}): "
        f"query {q} {json.dumps(tokens[q])} -> key {k} {json.dumps(tokens[k])}: "
        f"score {summary['score']:.4g}{capped}, weight {summary['pattern']:.3f}"
    )
    c = summary["constants"]
    typer.echo(
        f"  = pairs {summary['pair_total']:.4g} + query nodes x key constant "
        f"{c['query_sources_x_key_constant']:.4g} + query constant x key nodes "
        f"{c['query_constant_x_key_sources']:.4g} + constant x constant "
        f"{c['query_constant_x_key_constant']:.4g}"
    )
    typer.echo("  top pairs (query side | key side):")
    for pair in summary["pairs"]:
        typer.echo(
            f"    {pair['value']:+9.4f}  {_node_label(pair['query_source'], tokens)}"
            f"  |  {_node_label(pair['key_source'], tokens)}"
        )
    for side in ("query", "key"):
        typer.echo(f"  {side}-side totals (constant {summary[f'{side}_constant_marginal']:+.4f}):")
        for item in summary[f"{side}_marginals"]:
            typer.echo(f"    {item['value']:+9.4f}  {_node_label(item['source'], tokens)}")
