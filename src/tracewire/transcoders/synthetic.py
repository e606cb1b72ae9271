"""Small random transcoder sets for tests, examples and benchmarks.

They live in the package (not in ``tests/``) so that every test package, benchmark script and
notebook can ``from tracewire.transcoders.synthetic import random_plt`` without path tricks.
Weights are drawn from a seeded generator, so the same arguments always give the same set, and
are scaled so that roughly a third to a half of the features fire on ``random_inputs``.
"""

from __future__ import annotations

from typing import TypedDict, Unpack

import torch
from torch import Tensor

from tracewire.transcoders.base import LayerWeights, TranscoderConfig, TranscoderSet
from tracewire.transcoders.cross_layer import CrossLayerTranscoder
from tracewire.transcoders.per_layer import PerLayerTranscoders


def _random_layers(
    kind: str,
    n_layers: int,
    d_model: int,
    d_tc: int,
    activation: str,
    skip: bool,
    generator: torch.Generator,
    dtype: torch.dtype,
) -> list[LayerWeights]:
    def randn(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    layers = []
    for layer in range(n_layers):
        n_out = 1 if kind == "plt" else n_layers - layer
        dec_shape = (d_tc, d_model) if kind == "plt" else (d_tc, n_out, d_model)
        threshold = None
        if activation == "jumprelu":
            u = torch.rand(d_tc, generator=generator, dtype=torch.float64)
            threshold = (0.05 + 0.45 * u).to(dtype)  # strictly positive, below typical pre-activations
        layers.append(
            LayerWeights(
                W_enc=randn(d_tc, d_model, scale=d_model**-0.5),
                b_enc=randn(d_tc, scale=0.1),
                W_dec=randn(*dec_shape, scale=d_tc**-0.5),
                b_dec=randn(d_model, scale=0.1),
                threshold=threshold,
                W_skip=randn(d_model, d_model, scale=0.3 * d_model**-0.5) if skip else None,
            )
        )
    return layers


class RandomSetOptions(TypedDict, total=False):
    """Options of :func:`random_plt` / :func:`random_clt` beyond the sizes (defaults in ``_random_set``)."""

    activation: str  # "jumprelu" (default), "relu" or "topk"
    k: int | None  # TopK's k; default d_tc // 4
    skip: bool  # a skip connection (per output layer for a CLT)
    seed: int
    dtype: torch.dtype
    model_name: str | None
    feature_input_hook: str
    feature_output_hook: str
    scan: str | None


def _random_set(
    kind: str,
    n_layers: int,
    d_model: int,
    d_tc: int,
    *,
    activation: str = "jumprelu",
    k: int | None = None,
    skip: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    model_name: str | None = "tiny-random",
    feature_input_hook: str = "mlp.hook_in",
    feature_output_hook: str = "mlp.hook_out",
    scan: str | None = None,
) -> TranscoderSet:
    if activation == "topk" and k is None:
        k = max(1, d_tc // 4)
    config = TranscoderConfig(
        kind=kind,
        model_name=model_name,
        feature_input_hook=feature_input_hook,
        feature_output_hook=feature_output_hook,
        activation=activation,
        k=k if activation == "topk" else None,
        scan=scan,
        n_layers=n_layers,
        d_model=d_model,
        d_transcoder=d_tc,
        has_skip=skip,
    )
    generator = torch.Generator().manual_seed(seed)
    layers = _random_layers(kind, n_layers, d_model, d_tc, activation, skip, generator, dtype)
    cls = PerLayerTranscoders if kind == "plt" else CrossLayerTranscoder
    return cls(config, layers)


def random_plt(
    n_layers: int = 3, d_model: int = 8, d_tc: int = 16, **options: Unpack[RandomSetOptions]
) -> PerLayerTranscoders:
    """A random per-layer transcoder set (a skip transcoder when ``skip``); TopK defaults to k = d_tc // 4."""
    ts = _random_set("plt", n_layers, d_model, d_tc, **options)
    assert isinstance(ts, PerLayerTranscoders)
    return ts


def random_clt(
    n_layers: int = 3, d_model: int = 8, d_tc: int = 16, **options: Unpack[RandomSetOptions]
) -> CrossLayerTranscoder:
    """A random cross-layer transcoder (skip per output layer when ``skip``); TopK k defaults to d_tc // 4."""
    ts = _random_set("clt", n_layers, d_model, d_tc, **options)
    assert isinstance(ts, CrossLayerTranscoder)
    return ts


def random_inputs(
    n_layers: int,
    d_model: int,
    shape: tuple[int, ...] = (5,),
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """One random transcoder input ``[*shape, d_model]`` per layer (unit-variance entries)."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    return [
        torch.randn(*shape, d_model, generator=generator, dtype=torch.float64).to(dtype)
        for _ in range(n_layers)
    ]
