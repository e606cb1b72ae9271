"""CLI: ``tracewire batch attribute|dashboards|merge-stores``, ``tracewire compare`` and ``aggregate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from tracewire.cli.common import DTYPES, fail_cleanly, parse_dtype

batch_app = typer.Typer(help="Many prompts: batch attribution (serial or on Ray), merged dashboard stores.")


@batch_app.command("attribute")
@fail_cleanly
def batch_attribute_command(
    prompts: Path = typer.Argument(
        ..., help="Text file (one prompt a line) or JSONL (prompt, targets, budget, slug)."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output folder (graphs/, manifest.json, index.json)."
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model alias, folder, .gguf or hub id."),
    transcoders: str = typer.Option(..., "--transcoders", "-t", help="Transcoder folder."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Ray workers on a local cluster (0: this process)."
    ),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Run on an existing Ray cluster (e.g. auto)."
    ),
    threads: int = typer.Option(
        None, "--threads", min=1, help="Torch threads per worker (default: cores/workers)."
    ),
    max_feature_nodes: int = typer.Option(
        None, "--max-feature-nodes", help="Feature budget (per-line 'budget')."
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="Targets per backward pass."),
    max_n_logits: int = typer.Option(10, "--max-n-logits"),
    desired_logit_prob: float = typer.Option(0.95, "--desired-logit-prob"),
    dtype: str = typer.Option("fp32", "--dtype", help=f"One of {', '.join(DTYPES)}."),
    device: str = typer.Option("auto", "--device", help="auto: one GPU per worker where there are GPUs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Attribute every prompt of PROMPTS into OUTPUT; re-run the same command to resume."""
    import os

    from tracewire.batch import AttributionSettings, read_prompts, run_batch

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    jobs = read_prompts(prompts)
    n_workers = max(workers, 1)
    settings = AttributionSettings(
        model=_absolute(model),
        transcoders=_absolute(transcoders),
        dtype=str(parse_dtype(dtype)).removeprefix("torch."),
        device=device,
        threads=threads or max(1, (os.cpu_count() or 1) // n_workers),
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
    )
    report = run_batch(jobs, settings, output, workers=workers, ray_address=ray_address, progress=not quiet)
    for slug, error in report.failed.items():
        typer.echo(f"  failed {slug}: {error}")
    typer.echo(report.summary())


@batch_app.command("dashboards")
@fail_cleanly
def batch_dashboards_command(
    output: Path = typer.Option(..., "--output", "-o", help="The merged feature store (.sqlite)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model alias, folder, .gguf or hub id."),
    transcoders: str = typer.Option(..., "--transcoders", "-t", help="Transcoder folder."),
    corpus: Path = typer.Option(None, "--corpus", help="Token corpus (default: the model's default corpus)."),
    tokens: int = typer.Option(1_000_000, "--tokens", min=1, help="Corpus tokens to read (whole windows)."),
    shards: int = typer.Option(2, "--shards", min=1, help="Pieces the features are cut into."),
    by: str = typer.Option("features", "--by", help="Shard by 'features' (id ranges) or 'layers'."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Ray workers on a local cluster (0: this process)."
    ),
    ray_address: str = typer.Option(None, "--ray-address", help="Run on an existing Ray cluster."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads per worker."),
    seq_len: int = typer.Option(128, "--seq-len", help="Corpus window length (BOS included)."),
    batch_windows: int = typer.Option(16, "--batch-windows", min=1, help="Windows per model forward."),
    dtype: str = typer.Option("fp32", "--dtype", help=f"One of {', '.join(DTYPES)}."),
    device: str = typer.Option("auto", "--device"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Build the dashboards of every feature in shards (on Ray workers) and merge them into one store.

    Default card settings of 'tracewire dashboards'; the result equals a single-process build.
    """
    import os

    from tracewire.batch import AttributionSettings
    from tracewire.batch.dashboards import build_sharded_store
    from tracewire.corpus import default_corpus_dir
    from tracewire.dashboards.config import DashboardConfig
    from tracewire.transcoders.io import load_transcoders

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = AttributionSettings(
        model=_absolute(model),
        transcoders=_absolute(transcoders),
        dtype=str(parse_dtype(dtype)).removeprefix("torch."),
        device=device,
        threads=threads or max(1, (os.cpu_count() or 1) // max(workers, 1)),
    )
    shape = load_transcoders(settings.transcoders, lazy_decoder=True)  # only its shape is needed here
    build_sharded_store(
        settings, corpus or default_corpus_dir(model), output, tokens=tokens, shards=shards,
        n_layers=shape.n_layers, d_transcoder=shape.d_transcoder, by=by, workers=workers,
        ray_address=ray_address, config=DashboardConfig(seq_len=seq_len), batch_windows=batch_windows,
        progress=not quiet,
    )  # fmt: skip
    typer.echo(f"wrote {output}")


@batch_app.command("merge-stores")
@fail_cleanly
def merge_stores_command(
    shards: list[Path] = typer.Argument(..., help="Feature stores built over disjoint feature ranges."),
    output: Path = typer.Option(..., "--output", "-o", help="The merged store to write."),
) -> None:
    """Merge feature-store shards of one build into one store (refuses shards of different builds)."""
    from tracewire.dashboards.merge import merge_feature_stores

    n = merge_feature_stores(shards, output)
    typer.echo(f"wrote {output}: {n} feature cards from {len(shards)} shards")


@fail_cleanly
def compare_command(
    graph_a: Path = typer.Argument(..., help="First graph (.safetensors)."),
    graph_b: Path = typer.Argument(..., help="Second graph (.safetensors)."),
    top: int = typer.Option(20, "--top", help="Differences to print."),
    json_out: Path = typer.Option(None, "--json", help="Write the ranked differences as JSON."),
) -> None:
    """Align two graphs by (layer, feature, position) and rank their differences by influence moved."""
    from tracewire.atomic import atomic_write_json
    from tracewire.graph.compare import compare_graphs
    from tracewire.graph.graph import Graph

    result = compare_graphs(Graph.load(graph_a), Graph.load(graph_b))
    typer.echo(
        f"{result.alignment}-aligned: {result.edges_gained} edges gained, {result.edges_lost} lost, "
        f"{result.edges_changed} changed; {len(result.ranked)} differences"
    )
    for d in result.ranked[:top]:
        values = (
            f"{d.value_a if d.value_a is not None else '-'} -> {d.value_b if d.value_b is not None else '-'}"
        )
        typer.echo(f"  {d.score:10.4g}  {d.kind:18s} {d.description}  ({values})")
    if json_out is not None:
        atomic_write_json(json_out, result.to_json(), allow_nan=True)
        typer.echo(f"wrote {json_out}")


@fail_cleanly
def aggregate_command(
    directory: Path = typer.Argument(
        ..., help="A batch folder (index.json) or a folder of .safetensors graphs."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The aggregate graph to write (.safetensors)."),
    min_fraction: float = typer.Option(
        0.5, "--min-fraction", help="Common circuit: influential in >= this share."
    ),
    common_only: bool = typer.Option(False, "--common-only", help="Write only the common circuit."),
    combine: str = typer.Option("mean", "--combine", help="Edge weights: mean, sum or influence-weighted."),
    node_threshold: float = typer.Option(
        0.8, "--node-threshold", help="Pruning threshold for 'influential'."
    ),
    store: Path = typer.Option(None, "--store", help="Feature store whose labels go into the graph."),
) -> None:
    """Merge many prompts' graphs by (layer, feature): the graph, its common circuit, a feature index."""
    from tracewire.atomic import atomic_write_json
    from tracewire.dashboards.store import FeatureStore
    from tracewire.graph.aggregate import aggregate_graphs
    from tracewire.graph.graph import Graph

    paths = _graph_files(directory)
    aggregate = aggregate_graphs(
        (Graph.load(path) for path in paths), names=[p.stem for p in paths], node_threshold=node_threshold
    )
    labels = None
    if store is not None:
        with FeatureStore(store, readonly=True) as feature_store:
            labels = feature_store.labels()
    graph = aggregate.to_graph(
        combine=combine, min_fraction=min_fraction if common_only else None, feature_labels=labels
    )
    graph.save(output)
    circuit = aggregate.common_circuit(min_fraction)
    stem = output.with_suffix("")
    atomic_write_json(Path(f"{stem}.common.json"), circuit.to_json())
    atomic_write_json(Path(f"{stem}.features.json"), aggregate.feature_index())
    typer.echo(
        f"wrote {output}: {aggregate.n_graphs} graphs, {aggregate.n_features} features; common circuit "
        f"(>= {min_fraction:.0%}): {len(circuit.features)} features, {len(circuit.edges)} edges "
        f"-> {stem}.common.json, feature index -> {stem}.features.json"
    )


def _graph_files(directory: Path) -> list[Path]:
    from tracewire.errors import InvalidArgumentError

    index = directory / "index.json"
    if index.is_file():
        return [
            directory / entry["graph"] for entry in json.loads(index.read_text(encoding="utf-8"))["graphs"]
        ]
    paths = sorted(directory.glob("*.safetensors"))
    if not paths:
        raise InvalidArgumentError(f"{directory}: no index.json and no .safetensors graphs to aggregate")
    return paths


def _absolute(spec: str) -> str:
    """A local path made absolute (workers may run elsewhere); an alias or hub id unchanged."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec
