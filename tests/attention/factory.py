"""One tiny traced prompt per architecture, shared by the attention tests."""

from __future__ import annotations

import functools

from tests.factories.models import random_ids, tiny_model
from tracewire.attribution.engine import attribute
from tracewire.graph.graph import Graph
from tracewire.replacement.model import ReplacementModel
from tracewire.transcoders.synthetic import random_clt, random_plt

#: Gemma-2's real cap (50) never bends tiny models' scores (|s| < 1 with query_pre_attn_scalar
#: 256); this one does.
TINY_SOFTCAP = 0.25


@functools.cache
def traced(arch: str, kind: str = "skip-clt") -> tuple[ReplacementModel, Graph]:
    """A tiny model of ``arch``, random transcoders and the full graph of a 5-token prompt."""
    lm = tiny_model(arch, seed=3)
    if arch == "gemma2":
        for layer in lm.model.model.layers:
            layer.self_attn.attn_logit_softcapping = TINY_SOFTCAP
    maker = random_clt if "clt" in kind else random_plt
    ts = maker(3, lm.d_model, 16, activation="relu", skip=kind.startswith("skip"), seed=3)
    rm = ReplacementModel(lm, ts)
    return rm, attribute(random_ids(5, seed=4), rm, progress=False)
