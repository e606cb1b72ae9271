"""Helpers shared by CLI commands: dtype names and clean error reporting."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from tracewire.errors import TracewireError

DEFAULT_MODEL = "smollm2-135m"
MODEL_HELP = "Model alias, folder, .gguf or hub id (default: a preset's own model, else smollm2-135m)."
TRANSCODERS_HELP = (
    "Transcoder folder, hub ref, or preset name (gemma, llama, qwen3, ...; see `tracewire presets`); "
    "default for smollm2-135m: its shipped set."
)
DTYPES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16")
F = TypeVar("F", bound=Callable[..., Any])


def parse_dtype(name: str) -> Any:
    import torch

    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if name not in table:
        raise typer.BadParameter(f"--dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return table[name]


_EXPECTED: tuple[type[BaseException], ...] = (TracewireError, FileNotFoundError, IsADirectoryError,
                                             NotADirectoryError, PermissionError)  # fmt: skip
"""Errors that mean bad input or environment, not a bug: one line, no traceback."""

_debug = False


def set_debug(enabled: bool) -> None:
    """``--debug``: let expected errors propagate with their traceback."""
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug or os.environ.get("TRACEWIRE_DEBUG", "").strip() not in {"", "0"}


def fail_cleanly(fn: F) -> F:
    """Turn expected errors (bad input, see ``_EXPECTED``) into one line on stderr and exit code 2.

    With ``--debug`` (or ``TRACEWIRE_DEBUG=1``) the error propagates with its traceback instead.
    Ctrl-C prints one line and exits 130. Anything else is a bug and keeps its traceback.
    """
    if getattr(fn, "__tracewire_clean__", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _EXPECTED as exc:
            if debug_enabled():
                raise
            typer.secho(f"error: {_one_line(exc)}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            typer.secho("interrupted", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=130) from None

    wrapper.__tracewire_clean__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, TracewireError) else f"{type(exc).__name__}: {text}"


def wrap_every_command(app: typer.Typer) -> None:
    """Apply :func:`fail_cleanly` to every command of ``app`` and its sub-apps (idempotent)."""
    for command in app.registered_commands:
        if command.callback is not None:
            command.callback = fail_cleanly(command.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            wrap_every_command(group.typer_instance)


def transcoders_or_default(transcoders: str | None, model: str | None) -> str:
    """``--transcoders`` as given, or the shipped set when the model is the embedded default."""
    from tracewire.transcoders.presets import EMBEDDED_MODEL, default_transcoders

    chosen = default_transcoders(transcoders, model)
    if chosen is None:
        raise typer.BadParameter(
            f"--transcoders is needed for --model {model!r}: the shipped default set is for {EMBEDDED_MODEL}"
        )
    return chosen
