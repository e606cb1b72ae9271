"""Predict an attribution run's peak memory and time before starting it.

The estimate replays the engine's own plan (``engine._capacity``, the replay buckets, the
row cap) on a prompt of the requested length, so what it counts is what the engine will do:

- active features ``F``: the transcoders' mean activity per token and layer, measured on a short
  calibration text with the real model (the dominant unknown), and the busiest position's
  activity (it sets the padding of the decoder blocks);
- batches: target rows read the whole prompt; budgeted feature rows are assumed to sit at the
  end of the prompt (influence concentrates there, so their replays cover the whole prompt, as
  measured); without a budget every position's features are rows;
- memory, by allocation class: the interpreter and the weights, the clean run and the sparse
  feature list, the retained replay, one batch's transients (gradients at every layer, the
  ``copies × F`` edge values), the decoder blocks, the stored edges and their packaged copy;
- time: the clean run, then per batch the backward (∝ copies × positions × layers), the
  decoder-block contraction (∝ padded block size, rebuilt per batch once the cache is full) and
  the per-row edge processing (∝ copies × F).

Constants were fitted on this project's benchmark machine (2-core Zen 4, fp32) against
``benchmarks/attribution.py``, which prints predicted next to measured so drift shows up. Time
scales with the machine; memory does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from tracewire.attribution.components import BLOCK_CACHE_BYTES, BLOCK_CHUNK_BYTES
from tracewire.attribution.engine import AUTO_CAP, AUTO_CAP_ABOVE, _capacity
from tracewire.attribution.replays import REPLAY_CACHE_BYTES
from tracewire.models.loading import LoadedModel
from tracewire.replacement.frozen_attention import KEEP_PATTERN_BYTES

GIB = 2**30
#: Resident memory of the process before the weights are touched (interpreter, torch,
#: transformers, tokenizer, allocator arenas).
BASELINE_BYTES = int(0.40 * GIB)
#: Clean run: site tensors kept per layer and position (inputs, outputs, values, errors, frozen
#: state), in units of ``d_model`` floats, allocator slack included.
RUN_VECTORS_PER_LAYER_POS = 9.0
#: Sparse feature list and its working copies, bytes per active feature.
BYTES_PER_FEATURE = 40
#: One batch's transients per copy, position and layer, in units of ``d_model`` floats
#: (gradients at every layer, their stacked and sliced copies, the replay forward's temporaries).
BATCH_VECTORS_PER_COPY_POS_LAYER = 2.5
#: Per-copy edge value arrays over the cone's features (values, |values|, top-k, concatenation).
BYTES_PER_COPY_FEATURE = 24
#: Seconds: fixed start-up of a run (target resolution, first allocations).
FIXED_S = 0.3
#: Seconds per position of the clean run (record forward, encode, decode, errors).
RECORD_S_PER_POS = 3.3e-3
#: Seconds per copy × position × layer of a backward pass (and its share of replay forwards).
BACKWARD_S = 1.6e-7
#: Seconds per padded decoder-block float (built or read per batch).
BLOCK_S_PER_FLOAT = 1.2e-9
#: Seconds per copy × feature of edge post-processing (cap, non-zeros, COO packing).
ROW_S_PER_COPY_FEATURE = 6e-9


@dataclass
class Estimate:
    peak_bytes: int
    seconds: float
    n_active_features: int
    n_rows: int
    n_edges: int
    n_batches: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    time_breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def summary(self) -> str:
        lines = [
            f"predicted peak memory: {self.peak_gib:.2f} GiB, time: ~{self.seconds:.0f} s",
            f"active features: {self.n_active_features:,}, rows: {self.n_rows:,}, "
            f"edges: {self.n_edges:,}, backward passes: {self.n_batches:,}",
        ]
        lines += [f"  {name}: {value / GIB:.2f} GiB" for name, value in self.breakdown.items()]
        lines += [f"  {name}: {value:.1f} s" for name, value in self.time_breakdown.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class Activity:
    """Active features per token and layer: the mean, and the busiest position's count."""

    mean: float
    busiest: float


@torch.no_grad()
def measure_activity(loaded: LoadedModel, transcoders: Any) -> Activity:
    """Activity of ``transcoders`` on the calibration text (BOS excluded)."""
    from tracewire.replacement.model import ReplacementModel
    from tracewire.transcoders.calibrated import CALIBRATION_TEXT

    run = ReplacementModel(loaded, transcoders).record(loaded.encode(CALIBRATION_TEXT))
    means, busiest = [], []
    for layer in range(loaded.n_layers):
        counts = (transcoders.encode(layer, run.transcoder_inputs[layer][0, 1:]) != 0).sum(-1).float()
        means.append(float(counts.mean()))
        busiest.append(float(counts.max()))
    return Activity(mean=sum(means) / len(means), busiest=sum(busiest) / len(busiest))


def active_per_token(loaded: LoadedModel, transcoders: Any) -> float:
    """Mean number of active features per token and layer on the calibration text."""
    return measure_activity(loaded, transcoders).mean


def _bucket(length: int, n_pos: int) -> int:
    size = 1
    while size < length:
        size *= 2
    return min(size, n_pos)


def _plan(
    n_pos: int,
    n_layers: int,
    n_targets: int,
    per_pos: float,
    n_selected: int,
    budgeted: bool,
    batch_size: int,
    max_batch_tokens: int,
) -> list[tuple[int, int, int, int]]:
    """Batches as (rows, copies, replay length, top layer)."""
    full = _bucket(n_pos, n_pos)
    plan = []
    cap = _capacity(full, batch_size, max_batch_tokens)
    for start in range(0, n_targets, cap):
        plan.append((min(cap, n_targets - start), cap, full, n_layers))
    if budgeted:
        for start in range(0, n_selected, cap):
            plan.append((min(cap, n_selected - start), cap, full, n_layers - 1))
        return plan
    # every feature is a row: ordered by position, each position's rows in its own bucket
    pending = 0.0
    for pos in range(1, n_pos):
        pending += per_pos
        length = _bucket(pos + 1, n_pos)
        cap = _capacity(length, batch_size, max_batch_tokens)
        while pending >= cap:
            plan.append((cap, cap, length, n_layers - 1))
            pending -= cap
    if pending >= 1:
        plan.append((math.ceil(pending), cap, full, n_layers - 1))
    return plan


def estimate_attribution(
    loaded: LoadedModel,
    transcoders: Any,
    *,
    n_tokens: int,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    max_n_logits: int = 10,
    max_batch_tokens: int = 4096,
    active: float | Activity | None = None,
) -> Estimate:
    """Estimate one ``attribute`` call on a prompt of ``n_tokens`` tokens (BOS included).

    ``active``: the transcoders' activity if already known (a mean per token and layer, or an
    :class:`Activity`); measured on the calibration text otherwise.
    """
    if isinstance(active, Activity):
        activity = active
    elif active is not None:
        activity = Activity(mean=float(active), busiest=2.5 * float(active))
    else:
        activity = measure_activity(loaded, transcoders)
    n_layers, d_model = loaded.n_layers, loaded.d_model
    element = torch.finfo(loaded.dtype).bits // 8
    n_pos = max(2, n_tokens)
    n_features = int(activity.mean * n_layers * (n_pos - 1))
    budgeted = max_feature_nodes is not None and max_feature_nodes < n_features
    n_selected = min(max_feature_nodes, n_features) if max_feature_nodes is not None else n_features
    n_targets = max_n_logits
    row_cap = None if n_features <= AUTO_CAP_ABOVE else AUTO_CAP
    plan = _plan(
        n_pos,
        n_layers,
        n_targets,
        activity.mean * n_layers,
        n_selected,
        budgeted,
        batch_size,
        max_batch_tokens,
    )

    # -- memory -------------------------------------------------------------------------------
    params = sum(p.numel() for p in loaded.model.parameters()) * element
    tc_params = sum(p.numel() * p.element_size() for p in transcoders.parameters())
    run = int(RUN_VECTORS_PER_LAYER_POS * n_layers * n_pos * d_model * 4)
    features = n_features * BYTES_PER_FEATURE
    n_max = max(1.0, activity.busiest)
    block_layer = n_pos * n_max * d_model * 4 * len(transcoders.output_layers(0))
    blocks = min(BLOCK_CACHE_BYTES, int(n_layers * block_layer)) + min(BLOCK_CHUNK_BYTES, int(block_layer))
    pattern = int(getattr(loaded.config, "num_attention_heads", 1)) * n_pos * n_pos * 4
    copies = max(c for _, c, _, _ in plan)
    replay_held = min(
        REPLAY_CACHE_BYTES,
        copies * n_pos * d_model * element + (n_layers * pattern if pattern <= KEEP_PATTERN_BYTES else 0),
    )
    transient = int(
        BATCH_VECTORS_PER_COPY_POS_LAYER * copies * n_pos * n_layers * d_model * 4
        + BYTES_PER_COPY_FEATURE * copies * n_features
    )
    feat_per_row = n_features if row_cap is None else min(row_cap, n_features)
    cone = 1.0 if budgeted else 0.5
    n_edges = int(
        n_targets * (feat_per_row + n_layers * n_pos + n_pos)
        + n_selected * (min(feat_per_row, n_features * cone) + cone * n_layers * n_pos + cone * n_pos)
    )
    stored = n_edges * 12  # int32 row, int32 column, float32 value
    packaging = n_edges * 28  # remapped int64 rows/columns and the kept values
    peak = (
        BASELINE_BYTES
        + params
        + tc_params
        + run
        + features
        + replay_held
        + blocks
        + max(stored + transient, stored + packaging)
    )

    # -- time ---------------------------------------------------------------------------------
    backward = sum(c * length * top for _, c, length, top in plan) * BACKWARD_S
    block_floats = sum(length * n_max * d_model * top for _, _, length, top in plan)
    cached = n_layers * block_layer <= BLOCK_CACHE_BYTES
    contraction = block_floats * BLOCK_S_PER_FLOAT * (0.5 if cached else 1.0)
    row_work = sum(c * n_features * min(1.0, length / n_pos) for _, c, length, _ in plan)
    rows = row_work * ROW_S_PER_COPY_FEATURE
    record = FIXED_S + RECORD_S_PER_POS * n_pos
    seconds = record + backward + contraction + rows
    return Estimate(
        peak_bytes=int(peak),
        seconds=seconds,
        n_active_features=n_features,
        n_rows=n_targets + n_selected,
        n_edges=n_edges,
        n_batches=len(plan),
        breakdown={
            "baseline (python, torch)": BASELINE_BYTES,
            "model weights": params,
            "transcoder weights": tc_params,
            "clean run": run,
            "active feature list": features,
            "retained replay": replay_held,
            "decoder blocks": blocks,
            "stored edges": stored,
            "largest batch (transient)": transient,
            "packaging copies": packaging,
        },
        time_breakdown={
            "clean run": record,
            "backward passes": backward,
            "feature contraction": contraction,
            "edge processing": rows,
        },
    )
