"""The two feature-edge contractions (padded blocks, dense GEMM + gather) and the cost model's choice.

Exactness against an independent oracle is in ``test_engine.py`` (both paths, every architecture);
here the paths are compared with each other on longer prompts, in chunks, and the choice is checked.
Tolerance: the paths associate the same fp32 sum differently (``Σ(a·w)·g`` vs ``(Σw·g)·a``), so
edges agree to ``1e-5`` relative to the largest |edge| of the graph.
"""

from __future__ import annotations

import pytest
import torch

import tracewire.attribution.contraction as contraction
from tests.attribution.oracle import graph_dense
from tests.factories.models import random_ids, tiny_model
from tracewire.attribution.components import compute_components
from tracewire.attribution.engine import attribute
from tracewire.errors import InvalidArgumentError
from tracewire.replacement.model import ReplacementModel
from tracewire.transcoders.synthetic import random_clt, random_plt


def _rm(kind: str, seed: int) -> ReplacementModel:
    lm = tiny_model("llama", seed=seed)
    maker = random_clt if kind == "clt" else random_plt
    return ReplacementModel(lm, maker(3, lm.d_model, 32, activation="relu", skip=kind == "plt", seed=seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(a.abs().max())
    assert scale > 0
    assert float((a - b).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("kind", ["plt", "clt"])
def test_dense_and_block_paths_give_the_same_graph(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rm = _rm(kind, seed=21)
    ids = random_ids(13, seed=22)
    blocks = graph_dense(attribute(ids, rm, progress=False, batch_size=5, contraction="blocks"))
    dense = graph_dense(attribute(ids, rm, progress=False, batch_size=5, contraction="dense"))
    assert blocks.shape == dense.shape
    _close(blocks, dense)
    # the dense path in chunks of one position gives the same graph
    monkeypatch.setattr(contraction, "DENSE_CHUNK_BYTES", 1)
    chunked = graph_dense(attribute(ids, rm, progress=False, batch_size=5, contraction="dense"))
    _close(blocks, chunked)
    auto = graph_dense(attribute(ids, rm, progress=False, batch_size=5))
    _close(blocks, auto)


def test_cost_model_prefers_dense_for_long_prompts_with_few_copies() -> None:
    model = contraction.CostModel()
    width, d_tc = 576, 4096
    # 4,096 positions, one copy, blocks rebuilt per batch; the measured 4,095-token graph (random
    # calibrated PLTs) had 139 active features per layer and position on average
    long_blocks = model.blocks_seconds(1, 4096 * 139, width, cached=False)
    long_dense = model.dense_seconds(1, 4096, width, d_tc)
    assert long_dense < long_blocks
    # 16 positions, 64 copies, cached blocks: blocks win by far
    short_blocks = model.blocks_seconds(64, 16 * 40, width, cached=True)
    short_dense = model.dense_seconds(64, 16, width, d_tc)
    assert short_blocks < short_dense


def test_choice_uses_the_components_and_never_densifies_lazy_decoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rm = _rm("plt", seed=23)
    ts = rm.transcoders
    assert ts is not None
    run = rm.record(random_ids(8, seed=24))
    comps = compute_components(ts, run, [0])
    n_max = comps.busiest_position_count(1)
    counts = torch.bincount(comps.pos[comps.layer_slice(1)])
    assert n_max == int(counts.max())
    # d_tc = 32 is tiny: a dense GEMM over all features beats a padded block
    monkeypatch.setattr(
        contraction, "COST_MODEL", contraction.CostModel(gemm_flops=1e11, memory_bytes_per_s=1e3)
    )
    assert contraction.choose_contraction(ts, comps, 1, 1, 8, 4) == "dense"
    monkeypatch.setattr(type(ts), "lazy_decoder", property(lambda self: True))
    assert contraction.choose_contraction(ts, comps, 1, 1, 8, 4) == "blocks"


def test_unknown_contraction_is_an_error() -> None:
    rm = _rm("plt", seed=25)
    with pytest.raises(InvalidArgumentError, match="contraction must be one of auto, blocks, dense"):
        attribute(random_ids(4, seed=26), rm, progress=False, contraction="sparse")
