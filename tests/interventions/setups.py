"""Tiny random model + transcoder pairs shared by the intervention and evaluation tests."""

from __future__ import annotations

from tests.factories.models import tiny_model
from tracewire.interventions.api import Intervener
from tracewire.transcoders.synthetic import random_clt, random_plt

KINDS = ("plt", "skip", "clt")


def setup(
    arch: str,
    kind: str = "plt",
    activation: str = "relu",
    *,
    seed: int = 0,
    d_tc: int = 24,
    hooks: tuple[str, str] = ("mlp.hook_in", "mlp.hook_out"),
):
    """(LoadedModel, TranscoderSet): 3 layers, d_model 16; ``kind`` plt | skip | clt; ``hooks``
    the transcoders' (input, output) hooks."""
    lm = tiny_model(arch, seed=seed)
    maker = random_clt if kind == "clt" else random_plt
    ts = maker(
        3,
        lm.d_model,
        d_tc,
        activation=activation,
        skip=kind == "skip",
        seed=seed,
        feature_input_hook=hooks[0],
        feature_output_hook=hooks[1],
    )
    return lm, ts


def engine(arch: str, kind: str = "plt", activation: str = "relu", *, seed: int = 0) -> Intervener:
    lm, ts = setup(arch, kind, activation, seed=seed)
    return Intervener(lm, ts)


def active_feature(acts, layer: int, *, skip_first: bool = True) -> tuple[int, int, float]:
    """(position, feature, activation) of the first active feature of ``acts[layer]`` after BOS."""
    start = 1 if skip_first else 0
    pos, feat = (acts[layer][start:] != 0).nonzero()[0].tolist()
    return pos + start, feat, float(acts[layer][pos + start, feat])
