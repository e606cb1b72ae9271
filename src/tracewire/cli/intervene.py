"""``tracewire intervene`` and ``tracewire evaluate``: test a graph's hypothesis in the model.

``intervene`` prints the top next-token probabilities before and after a set of feature
interventions (and, with ``--generate N``, both continuations); ``evaluate`` writes the
faithfulness report of a saved graph as JSON and PNG.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tracewire.cli.common import DEFAULT_MODEL, MODEL_HELP, TRANSCODERS_HELP, transcoders_or_default
from tracewire.errors import InvalidArgumentError, TracewireError

if TYPE_CHECKING:  # torch-heavy: imported when a command runs, not for --help
    from tracewire.models.loading import LoadedModel
    from tracewire.transcoders.base import TranscoderSet

F = TypeVar("F", bound=Callable[..., Any])
_DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def _clean_errors(fn: F) -> F:
    """Bad input (tracewire's errors, bad intervention specs) becomes one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (TracewireError, ValueError) as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _load(model: str, transcoders: str, dtype: str, device: str) -> tuple[LoadedModel, TranscoderSet]:
    import torch

    from tracewire.models.loading import load_model
    from tracewire.transcoders.io import load_transcoders

    if dtype not in _DTYPES:
        raise InvalidArgumentError(f"--dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    torch_dtype = getattr(torch, _DTYPES[dtype])
    loaded = load_model(model, dtype=torch_dtype, device=device)
    ts = load_transcoders(
        transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model, device=device, dtype=torch_dtype
    )
    return loaded, ts


def parse_layers(text: str | None, n_layers: int) -> range | None:
    """``--constrained``: ``all``, ``a:b`` (b exclusive, either side optional) or one layer ``a``."""
    if text is None:
        return None
    text = text.strip()
    if text == "all":
        return range(n_layers)
    try:
        if ":" in text:
            lo, _, hi = text.partition(":")
            return range(int(lo) if lo else 0, int(hi) if hi else n_layers)
        return range(int(text), int(text) + 1)
    except ValueError:
        raise InvalidArgumentError(
            f"--constrained {text!r}: expected 'all', 'START:END' or one layer"
        ) from None


@_clean_errors
def intervene_command(
    prompt: Annotated[str, typer.Argument(help="The prompt (BOS is prepended).")],
    transcoders: Annotated[str | None, typer.Option("--transcoders", "-t", help=TRANSCODERS_HELP)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="L:POS:FEAT=VALUE: clamp (repeatable).")
    ] = None,
    scale: Annotated[list[str] | None, typer.Option("--scale", help="L:POS:FEAT=FACTOR (0 ablates).")] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="L:POS:FEAT=VALUE: add (steer).")] = None,
    ablate: Annotated[list[str] | None, typer.Option("--ablate", help="L:POS:FEAT: scale by 0.")] = None,
    generate: Annotated[int, typer.Option("--generate", help="Also generate N tokens before and after.")] = 0,
    top_k: Annotated[int, typer.Option("--top-k", help="How many next tokens to list.")] = 10,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (both generations use it).")] = 0,
    freeze_attention: Annotated[
        bool,
        typer.Option("--freeze-attention/--no-freeze-attention", help="Keep the clean attention patterns."),
    ] = True,
    constrained: Annotated[
        str | None,
        typer.Option("--constrained", help="Layers whose features stay clean: 'all', 'A:B' or 'L'."),
    ] = None,
    propagate: Annotated[
        str, typer.Option("--propagate", help="'transcoders' (errors fixed) or 'model' (real MLPs).")
    ] = "transcoders",
    dtype: Annotated[str, typer.Option("--dtype", help="fp32 or bf16.")] = "fp32",
    device: Annotated[str, typer.Option("--device")] = "cpu",
) -> None:
    """Top next-token probabilities of PROMPT before and after feature interventions.

    Each intervention is LAYER:POS:FEATURE=VALUE, e.g. --scale 3:7:120=0 (layer 3, position 7).

    POS: a token index (BOS is 0; negative counts from the prompt's end), A:B, K: (K onward) or *.

    Interventions apply in the order --set, --scale, --ablate, --add.
    """
    import torch

    from tracewire.interventions.api import Intervener
    from tracewire.interventions.spec import parse_intervention

    items = [parse_intervention(s, "set") for s in set_ or []]
    items += [parse_intervention(s, "scale") for s in scale or []]
    items += [parse_intervention(s.split("=")[0], "scale") for s in ablate or []]
    items += [parse_intervention(s, "add") for s in add or []]
    if not items:
        raise InvalidArgumentError("no interventions given: use --set, --scale, --ablate or --add")
    from tracewire.transcoders.presets import model_for_transcoders

    transcoders = transcoders_or_default(transcoders, model)
    loaded, ts = _load(
        model_for_transcoders(transcoders, model, default=DEFAULT_MODEL), transcoders, dtype, device
    )
    engine = Intervener(loaded, ts)
    clean = engine.clean(prompt)
    settings: dict[str, Any] = {
        "freeze_attention": freeze_attention,
        "constrained_layers": parse_layers(constrained, engine.n_layers),
        "propagate": propagate,
    }
    result = engine.run(clean, items, keep_activations=False, **settings)

    text = loaded.tokenizer.decode(clean.tokens.tolist()) if loaded.tokenizer is not None else prompt
    typer.echo(f"prompt: {text!r} ({clean.n_pos} tokens)")
    for item in items:
        typer.echo(f"  {item.describe()}")
    before = torch.softmax(clean.logits[-1].float(), -1)
    after = torch.softmax(result.logits[-1].float(), -1)
    ids = sorted(
        set(before.topk(top_k).indices.tolist()) | set(after.topk(top_k).indices.tolist()),
        key=lambda i: -max(float(before[i]), float(after[i])),
    )
    typer.echo(f"{'next token':20s} {'before':>8s} {'after':>8s} {'change':>8s}")
    for token in ids:
        b, a = float(before[token]), float(after[token])
        typer.echo(f"{loaded.token_strings([token])[0]!r:20s} {b:8.4f} {a:8.4f} {a - b:+8.4f}")
    if generate > 0:
        common: dict[str, Any] = {
            "max_new_tokens": generate,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
        }
        plain = engine.generate(clean, [], **common)
        steered = engine.generate(clean, items, **common, **settings)
        typer.echo(f"generation before: {plain.text!r}")
        typer.echo(f"generation after:  {steered.text!r}")


@_clean_errors
def evaluate_command(
    graph_path: Annotated[Path, typer.Argument(help="A graph made by `tracewire attribute` (.safetensors).")],
    transcoders: Annotated[
        str | None,
        typer.Option(
            "--transcoders",
            "-t",
            help="The transcoders the graph was made with (default for smollm2-135m: shipped).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model (default: the one named in the graph).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Ablate the top-k features by influence...")] = 20,
    n_random: Annotated[int, typer.Option("--random", help="...and this many random other features.")] = 20,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of each activation to ablate.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random features.")] = 0,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="JSON path (default: GRAPH.faithfulness.json); PNG beside it."),
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32 or bf16.")] = "fp32",
    device: Annotated[str, typer.Option("--device")] = "cpu",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Faithfulness of a graph: predicted vs actual ablation effects, and subgraph scores by budget."""
    from tracewire.evaluation.harness import evaluate_graph
    from tracewire.evaluation.plot import save_plot
    from tracewire.graph.graph import Graph

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    graph = Graph.load(graph_path)
    model_spec = model or graph.metadata.get("model")
    if not model_spec:
        raise InvalidArgumentError(f"{graph_path} names no model in its metadata: pass --model")
    transcoders = transcoders_or_default(transcoders, str(model_spec))
    loaded, ts = _load(str(model_spec), transcoders, dtype, device)
    report = evaluate_graph(graph, loaded, ts, k=k, n_random=n_random, fraction=fraction, seed=seed)
    report.metadata.update({"graph": str(graph_path), "model": str(model_spec), "transcoders": transcoders})
    json_path = output or graph_path.with_suffix(".faithfulness.json")
    report.save_json(json_path)
    png_path = save_plot(report, Path(json_path).with_suffix(".png"))

    typer.echo(
        f"{len(report.ablations)} ablations of {report.n_features} feature nodes, fraction {fraction:g}"
    )
    typer.echo(f"{'setting':20s} {'vs':7s} {'group':7s} {'r':>8s} {'MAE':>10s} {'mean|act|':>10s}")
    for name, groups in report.summary.items():
        for group, stats in groups.items():
            if group == "compared_with":
                continue
            corr = "n/a" if stats.get("correlation") is None else f"{stats['correlation']:.4f}"
            typer.echo(
                f"{name:20s} {groups['compared_with']:7s} {group:7s} {corr:>8s} "
                f"{stats.get('mean_abs_error') or 0.0:10.3g} {stats.get('mean_abs_actual') or 0.0:10.3g}"
            )
    curve = report.curve.to_json()
    typer.echo(
        f"graph scores: replacement {_fmt(report.graph_scores['replacement'])}, "
        f"completeness {_fmt(report.graph_scores['completeness'])}; areas over node budgets: "
        f"replacement {_fmt(curve['replacement_area'])}, completeness {_fmt(curve['completeness_area'])}"
    )
    typer.echo(f"wrote {json_path} and {png_path}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
