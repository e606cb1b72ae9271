"""``tracewire attribute`` and ``tracewire estimate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from tracewire.cli.common import (
    DEFAULT_MODEL,
    DTYPES,
    MODEL_HELP,
    TRANSCODERS_HELP,
    fail_cleanly,
    parse_dtype,
    transcoders_or_default,
)


@fail_cleanly
def attribute_command(
    prompt: str = typer.Argument(..., help="The prompt to explain (BOS is prepended)."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    transcoders: str = typer.Option(None, "--transcoders", "-t", help=TRANSCODERS_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Graph file to write (.safetensors)."),
    target: list[str] = typer.Option(
        None, "--target", help="A target token (repeatable); default: the salient logits."
    ),
    max_feature_nodes: int = typer.Option(None, "--max-feature-nodes", help="Feature budget (default: all)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Targets per backward pass."),
    max_n_logits: int = typer.Option(10, "--max-n-logits"),
    desired_logit_prob: float = typer.Option(0.95, "--desired-logit-prob"),
    dtype: str = typer.Option("fp32", "--dtype", help=f"One of {', '.join(DTYPES)}."),
    device: str = typer.Option("auto", "--device", help="auto: cuda where a GPU is visible, else cpu."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log phase timings."),
) -> None:
    """Build the attribution graph of PROMPT and save it as one .safetensors file."""

    from tracewire.attribution.engine import attribute
    from tracewire.batch.worker import resolve_device
    from tracewire.models.loading import load_model
    from tracewire.transcoders.io import load_transcoders
    from tracewire.transcoders.presets import model_for_transcoders

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch_dtype = parse_dtype(dtype)
    device = resolve_device(device)
    transcoders = transcoders_or_default(transcoders, model)
    model = model_for_transcoders(transcoders, model, default=DEFAULT_MODEL)
    loaded = load_model(model, dtype=torch_dtype, device=device)
    ts = load_transcoders(
        transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model, device=device, dtype=torch_dtype
    )
    graph = attribute(
        prompt,
        loaded,
        ts,
        targets=list(target) if target else None,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
        verbose=verbose,
    )
    graph.save(output)
    meta = graph.metadata
    typer.echo(
        f"wrote {output}: {graph.n_features} features ({meta['n_active_features']} active), "
        f"{graph.n_nodes} nodes, {graph.n_edges} edges in {meta['timings']['total']:.1f}s"
    )
    for label, p in zip(graph.target_labels, graph.target_probabilities.tolist()):
        typer.echo(f"  target {label!r} p={p:.3f}")
    typer.echo(f"  work: {json.dumps(meta['work'])}")


@fail_cleanly
def estimate_command(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    transcoders: str = typer.Option(None, "--transcoders", "-t", help=TRANSCODERS_HELP),
    prompt_tokens: int = typer.Option(
        None, "--prompt-tokens", help="Prompt length in tokens (with BOS), when the prompt is not known yet."
    ),
    prompt: str = typer.Option(
        None, "--prompt", help="The prompt itself: its activity and salient logits are measured."
    ),
    max_feature_nodes: int = typer.Option(None, "--max-feature-nodes"),
    batch_size: int = typer.Option(64, "--batch-size"),
    dtype: str = typer.Option("fp32", "--dtype"),
) -> None:
    """Predict peak memory and rough time of an attribution run before starting it."""
    from tracewire.attribution.estimate import estimate_attribution
    from tracewire.models.loading import load_model
    from tracewire.transcoders.io import load_transcoders
    from tracewire.transcoders.presets import model_for_transcoders

    torch_dtype = parse_dtype(dtype)
    transcoders = transcoders_or_default(transcoders, model)
    model = model_for_transcoders(transcoders, model, default=DEFAULT_MODEL)
    loaded = load_model(model, dtype=torch_dtype)
    ts = load_transcoders(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model, dtype=torch_dtype)
    if (prompt is None) == (prompt_tokens is None):
        raise typer.BadParameter("give exactly one of --prompt-tokens N or --prompt TEXT")
    est = estimate_attribution(
        loaded,
        ts,
        n_tokens=prompt_tokens,
        prompt=prompt,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
    )
    typer.echo(est.summary())
