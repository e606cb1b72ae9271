"""Shape and dtype checks whose messages say where a tensor came from and what was expected.

Loading and constructing transcoders both funnel through these helpers, so a bad file and a bad
hand-built tensor produce the same kind of message: *location*: *what was found*, *what was
expected* (and why, e.g. "d_model=12 from the d_model argument").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from tracewire.errors import TranscoderFormatError


class ShapedLike(Protocol):
    """Anything with a shape and a dtype: a tensor, or a lazily-read tensor's header."""

    @property
    def shape(self) -> Sequence[int]: ...

    @property
    def dtype(self) -> torch.dtype: ...


def check_floating(tensor: ShapedLike, *, where: str) -> None:
    """Transcoder weights must be floating point (an int tensor is a sign of a wrong file)."""
    if not tensor.dtype.is_floating_point:
        raise TranscoderFormatError(
            f"{where}: dtype {_dtype_name(tensor.dtype)} is not floating point; expected a float tensor "
            "(float32, float16, bfloat16 or float64)"
        )


def check_shape(tensor: ShapedLike, expected: Sequence[int], *, where: str, dims: str, why: str = "") -> None:
    """Raise unless ``tensor.shape == expected``; ``dims`` names the axes, ``why`` the source of the sizes."""
    found = tuple(int(s) for s in tensor.shape)
    want = tuple(int(s) for s in expected)
    if found != want:
        hint = f"; {why}" if why else ""
        raise TranscoderFormatError(f"{where}: shape {found}, expected {want} = {dims}{hint}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
