"""Tiny random transcoder sets for tests.

The builders live in ``tracewire.transcoders.synthetic`` (so benchmarks and examples can use them
too); this module re-exports them under the tests' factory convention and adds test-only helpers:
named variants, MLP outputs that a good transcoder would nearly reconstruct, and GemmaScope npz
files written with numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracewire.transcoders import TranscoderSet
from tracewire.transcoders.synthetic import random_clt, random_inputs, random_plt

__all__ = [
    "ACTIVATIONS",
    "VARIANTS",
    "near_mlp_out",
    "random_clt",
    "random_inputs",
    "random_plt",
    "random_set",
    "write_gemmascope_layers",
]

ACTIVATIONS = ("jumprelu", "relu", "topk")
VARIANTS: dict[str, tuple[Callable[..., TranscoderSet], bool]] = {
    "plt": (random_plt, False),
    "skip-plt": (random_plt, True),
    "clt": (random_clt, False),
    "skip-clt": (random_clt, True),
}


def random_set(variant: str, **kwargs: Any) -> TranscoderSet:
    """``random_plt`` / ``random_clt`` by variant name (``plt``, ``skip-plt``, ``clt``, ``skip-clt``)."""
    build, skip = VARIANTS[variant]
    return build(skip=skip, **kwargs)


def near_mlp_out(reconstruction: list[Tensor], *, seed: int = 0, spread: float = 0.25) -> list[Tensor]:
    """MLP outputs within a factor ``1 + spread`` (same sign) of a reconstruction, as from a good transcoder.

    Within a factor of 2, ``mlp_out - rec`` is exact in floating point (Sterbenz), so
    ``rec + (mlp_out - rec) == mlp_out`` holds bit for bit.
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for rec in reconstruction:
        u = torch.rand(rec.shape, generator=generator, dtype=torch.float64).to(rec.dtype)
        out.append(rec.detach() * (1 + spread * u))
    return out


def write_gemmascope_layers(
    directory: Path, *, n_layers: int = 2, d_model: int = 8, d_tc: int = 16, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Write ``directory/layer_{i}/params.npz`` in GemmaScope's layout (``W_enc [d_model, d_tc]``)."""
    rng = np.random.default_rng(seed)
    written = []
    for layer in range(n_layers):
        arrays: dict[str, Any] = {
            "W_enc": rng.standard_normal((d_model, d_tc)).astype(np.float32),
            "W_dec": rng.standard_normal((d_tc, d_model)).astype(np.float32),
            "b_enc": rng.standard_normal(d_tc).astype(np.float32),
            "b_dec": rng.standard_normal(d_model).astype(np.float32),
            "threshold": rng.uniform(0.05, 0.5, d_tc).astype(np.float32),
        }
        (directory / f"layer_{layer}").mkdir(parents=True, exist_ok=True)
        np.savez(directory / f"layer_{layer}" / "params.npz", **arrays)
        written.append(arrays)
    return written
