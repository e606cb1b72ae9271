"""Helpers shared by CLI commands: dtype names and clean error reporting."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from tracewire.errors import TracewireError

DEFAULT_MODEL = "smollm2-135m"
MODEL_HELP = "Model alias, folder, .gguf or hub id (default: a preset's own model, else smollm2-135m)."
TRANSCODERS_HELP = (
    "Transcoder folder, hub ref, or preset name (gemma, llama, qwen3, ...; see `tracewire presets`)."
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


def fail_cleanly(fn: F) -> F:
    """Turn tracewire's own errors (bad input) into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TracewireError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]
