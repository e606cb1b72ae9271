"""Predict an attribution run's peak memory and time before starting it.

The estimate replays the engine's own plan (``batching.plan_batches``: the replay buckets and
capacities; ``rows.auto_row_cap``) on a prompt of the requested length, so what it counts is what
the engine will do:

- active features ``F``: the transcoders' mean activity per token and layer, measured on a short
  calibration text with the real model (the dominant unknown), and the busiest position's
  activity (it sets the padding of the decoder blocks);
- batches: target rows read the whole prompt; budgeted feature rows are assumed to sit at the
  end of the prompt (influence concentrates there, so their replays cover the whole prompt, as
  measured); without a budget every position's features are rows;
- memory, by allocation class: the interpreter and the weights, the clean run and the sparse
  feature list, the retained replay, one batch's transients (gradients at every layer, the
  ``copies × F`` edge values), the decoder blocks, the stored edges and their packaged copy;
- time: the clean run, then per batch the feature contraction (the cheaper of padded decoder
  blocks, ∝ block size, and the dense ``g @ W_decᵀ`` GEMM, ∝ copies × positions — as the
  engine's cost model picks), the replay's backward (∝ copies × positions × layers), the
  attention patterns recomputed by long prompts' backward (∝ heads × length² × layers per
  pass) and the per-row edge processing (∝ copies × F).

Constants were fitted on this project's benchmark machine (2-core Zen 4, fp32) against
``benchmarks/attribution.py``, which prints predicted next to measured so drift shows up. Time
scales with the machine; memory does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tracewire.attribution.batching import (
    DEFAULT_MAX_BATCH_TOKENS,
    batch_capacity,
    plan_batches,
    replay_bucket,
)
from tracewire.attribution.components import BLOCK_CACHE_BYTES, BLOCK_CHUNK_BYTES
from tracewire.attribution.replays import REPLAY_CACHE_BYTES
from tracewire.attribution.rows import auto_row_cap
from tracewire.errors import InvalidArgumentError
from tracewire.models.loading import LoadedModel
from tracewire.replacement.frozen_attention import keeps_pattern
from tracewire.transcoders.base import TranscoderSet

GIB = 2**30
#: Busiest position's activity over the mean, when only a mean is given (SmolLM2: ~3).
BUSIEST_OVER_MEAN = 3.0
#: Resident memory of the process before the weights are touched (interpreter, torch,
#: transformers, tokenizer, allocator arenas).
BASELINE_BYTES = int(0.40 * GIB)
#: Per layer and position, in ``d_model`` float32 vectors: the clean run's site tensors, errors
#: and frozen state, and one batch's gradients at every layer (``copies × positions`` is at most
#: ``max_batch_tokens``, so they scale with the prompt too). Fitted: 7.9.
RUN_VECTORS_PER_LAYER_POS = 7.9
#: Sparse feature list (layer, position, feature, activation), bytes per active feature.
BYTES_PER_FEATURE = 28
#: One batch's arrays over the active features (the contraction output, the stored values, a
#: packaging slice's temporaries, the gradients the contraction reads), bytes per copy and
#: feature. Fitted on 511 and 4,095 tokens (rows packaged a slice at a time): 55.
BYTES_PER_COPY_FEATURE = 55
#: Seconds: fixed start-up of a run (target resolution, first allocations).
FIXED_S = 0.3
#: Seconds per position of the clean run (record forward, encode, decode, errors). Measured.
RECORD_S_PER_POS = 3.5e-3
#: Seconds per padded decoder-block float contracted (gathered into a cache-sized group and
#: multiplied, per batch). Fitted.
BLOCK_S_PER_FLOAT = 3.9e-10
#: Seconds per FLOP of the dense contraction ``g @ W_decᵀ`` (the box's fp32 GEMM rate); the
#: engine takes the cheaper of the two per layer and batch, and so does the estimate.
DENSE_S_PER_FLOP = 1.0 / 1.9e11
#: Seconds per copy × position × layer of the replay's backward (value and output projections,
#: frozen norms, kept attention patterns). Fitted on 16 and 511 tokens.
BACKWARD_S_PER_TOKEN_LAYER = 6.5e-6
#: Seconds per attention-score entry recomputed per backward pass (patterns that
#: ``frozen_attention.keeps_pattern`` does not keep; causal, so half of ``heads × length²``).
#: Measured: 0.25 s per layer and pass at 4,096 positions, 9 heads.
ATTENTION_S_PER_SCORE = 3.3e-9
#: Seconds per copy × feature of edge post-processing (non-zeros, dense or COO packing). Fitted.
ROW_S_PER_COPY_FEATURE = 2.6e-8
#: ...when rows are capped (``rows.auto_row_cap``): a top-k over every row's feature edges.
#: Fitted on 511 and 4,095 tokens.
CAPPED_ROW_S_PER_COPY_FEATURE = 1.0e-7


@dataclass
class Estimate:
    peak_bytes: int
    seconds: float
    n_active_features: int
    n_rows: int
    n_edges: int
    n_batches: int = 0
    #: Time if the prompt needs one salient logit (``seconds`` assumes ``max_n_logits`` when the
    #: prompt is not known; equal to ``seconds`` when it is).
    seconds_low: float = 0.0
    breakdown: dict[str, int] = field(default_factory=dict)
    time_breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def summary(self) -> str:
        lines = [
            f"predicted peak memory: {self.peak_gib:.2f} GiB, time: ~{self.seconds:.0f} s"
            + (
                f" ({self.seconds_low:.0f}–{self.seconds:.0f} s: 1 to max_n_logits salient logits)"
                if self.seconds_low < 0.95 * self.seconds
                else ""
            ),
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
def measure_activity(
    loaded: LoadedModel, transcoders: TranscoderSet, tokens: torch.Tensor | None = None
) -> Activity:
    """Activity of ``transcoders`` on ``tokens`` (default: the calibration text), BOS excluded."""
    return _clean_run(loaded, transcoders, tokens)[0]


@torch.no_grad()
def _clean_run(
    loaded: LoadedModel, transcoders: TranscoderSet, tokens: torch.Tensor | None
) -> tuple[Activity, torch.Tensor | None]:
    from tracewire.replacement.model import ReplacementModel
    from tracewire.transcoders.calibrated import CALIBRATION_TEXT

    ids = tokens if tokens is not None else loaded.encode(CALIBRATION_TEXT)
    run = ReplacementModel(loaded, transcoders).record(ids)
    means, busiest = [], []
    for layer in range(loaded.n_layers):
        counts = (transcoders.encode(layer, run.transcoder_inputs[layer][0, 1:]) != 0).sum(-1).float()
        means.append(float(counts.mean()))
        busiest.append(float(counts.max()))
    last = run.logits[0, -1] if run.logits is not None else None
    return Activity(mean=sum(means) / len(means), busiest=sum(busiest) / len(busiest)), last


def active_per_token(loaded: LoadedModel, transcoders: TranscoderSet) -> float:
    """Mean number of active features per token and layer on the calibration text."""
    return measure_activity(loaded, transcoders).mean


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
    plan = []
    last = [n_pos - 1]  # target rows read the last position; budgeted rows are assumed to, too
    for batch in plan_batches(last * n_targets, n_pos, batch_size, max_batch_tokens):
        plan.append((batch.end - batch.start, batch.capacity, batch.replay_length, n_layers))
    if budgeted:
        for batch in plan_batches(last * n_selected, n_pos, batch_size, max_batch_tokens):
            plan.append((batch.end - batch.start, batch.capacity, batch.replay_length, n_layers - 1))
        return plan
    full = replay_bucket(n_pos, n_pos)
    cap = batch_capacity(full, batch_size, max_batch_tokens)  # (reassigned per position below)
    # every feature is a row: ordered by position, each position's rows in its own bucket
    pending = 0.0
    for pos in range(1, n_pos):
        pending += per_pos
        length = replay_bucket(pos + 1, n_pos)
        cap = batch_capacity(length, batch_size, max_batch_tokens)
        while pending >= cap:
            plan.append((cap, cap, length, n_layers - 1))
            pending -= cap
    if pending >= 1:
        plan.append((math.ceil(pending), cap, full, n_layers - 1))
    return plan


def estimate_attribution(
    loaded: LoadedModel,
    transcoders: TranscoderSet,
    *,
    n_tokens: int | None = None,
    prompt: str | Sequence[int] | torch.Tensor | None = None,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    active: float | Activity | None = None,
) -> Estimate:
    """Estimate one ``attribute`` call, on ``prompt`` or on any prompt of ``n_tokens`` tokens.

    With ``prompt`` the estimate runs its clean forward (a few seconds at 4k tokens, ~2% of the
    attribution): activity and the number of salient-logit targets are then the prompt's own.
    With only ``n_tokens`` (BOS included), activity comes from the calibration text and the
    target count is its upper bound ``max_n_logits`` — long prompts, where each target row costs
    a whole backward pass, are then over-estimated in time. ``active``: a known activity (a mean
    per token and layer, or an :class:`Activity`) instead of measuring it.
    """
    n_targets = max_n_logits
    if prompt is not None:
        from tracewire.attribution.targets import resolve_targets

        ids = loaded.encode(prompt if not isinstance(prompt, torch.Tensor) else prompt.reshape(-1))
        measured, last_logits = _clean_run(loaded, transcoders, ids)
        n_tokens = int(ids.numel())
        if last_logits is not None:
            targets = resolve_targets(
                loaded, last_logits, None, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob
            )
            n_targets = len(targets)
        activity = measured if active is None else _activity(active)
    elif n_tokens is None:
        raise InvalidArgumentError("estimate_attribution needs n_tokens or prompt")
    else:
        activity = measure_activity(loaded, transcoders) if active is None else _activity(active)
    n_layers, d_model = loaded.n_layers, loaded.d_model
    element = torch.finfo(loaded.dtype).bits // 8
    n_pos = max(2, n_tokens)
    n_features = int(activity.mean * n_layers * (n_pos - 1))
    budgeted = max_feature_nodes is not None and max_feature_nodes < n_features
    n_selected = min(max_feature_nodes, n_features) if max_feature_nodes is not None else n_features
    row_cap = auto_row_cap(n_targets + n_selected, n_features)
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
    vector = d_model * 4
    run = int(RUN_VECTORS_PER_LAYER_POS * n_layers * n_pos * vector)
    features = n_features * BYTES_PER_FEATURE
    n_max = max(1.0, activity.busiest)
    block_layer = n_pos * n_max * vector * len(transcoders.output_layers(0))
    blocks = min(BLOCK_CACHE_BYTES, int(n_layers * block_layer)) + min(BLOCK_CHUNK_BYTES, int(block_layer))
    heads = int(getattr(loaded.config, "num_attention_heads", 1))
    pattern = heads * n_pos * n_pos * 4
    copies = max(c * length for _, c, length, _ in plan)  # copies × positions of the widest batch
    replay_held = min(
        REPLAY_CACHE_BYTES,
        copies * d_model * element + (n_layers * pattern if keeps_pattern(heads, n_pos, n_pos) else 0),
    )
    widest = max(c for _, c, _, _ in plan)
    transient = int(BYTES_PER_COPY_FEATURE * widest * n_features)
    cone = 1.0 if budgeted else 0.5
    feat_per_row = n_features * cone
    if row_cap is None or row_cap >= feat_per_row:  # dense rows over the features in the cone
        stored = int((n_targets + n_selected) * (feat_per_row + cone * (n_layers + 1) * n_pos) * 4)
    else:  # COO: capped feature edges plus every error and token edge
        stored = int((n_targets + n_selected) * (row_cap + cone * (n_layers + 1) * n_pos) * 12)
    # the graph keeps edges among selected features, errors, tokens and targets
    n_edges = int((n_targets + n_selected) * (min(n_selected, feat_per_row) + cone * (n_layers + 1) * n_pos))
    packaging = n_edges * 28
    peak = (
        BASELINE_BYTES
        + params
        + tc_params
        + run
        + features
        + replay_held
        + blocks
        + stored
        + max(transient, packaging)
    )

    # -- time ---------------------------------------------------------------------------------
    record = FIXED_S + RECORD_S_PER_POS * n_pos

    capped = row_cap is not None and row_cap < n_features * (1.0 if budgeted else 0.5)
    row_seconds = CAPPED_ROW_S_PER_COPY_FEATURE if capped else ROW_S_PER_COPY_FEATURE
    dense_flops_per_token_layer = 2.0 * d_model * len(transcoders.output_layers(0)) * transcoders.d_transcoder

    def batches_seconds(batches: list[tuple[int, int, int, int]]) -> tuple[float, float, float, float]:
        contraction = sum(
            min(
                length * n_max * d_model * top * BLOCK_S_PER_FLOAT,
                c * length * top * dense_flops_per_token_layer * DENSE_S_PER_FLOP,
            )
            for _, c, length, top in batches
        )
        backward = sum(c * length * top for _, c, length, top in batches) * BACKWARD_S_PER_TOKEN_LAYER
        recomputed = sum(
            heads * length * length / 2 * top
            for _, _, length, top in batches
            if not keeps_pattern(heads, length, length)
        )
        row_work = sum(c * n_features * min(1.0, length / n_pos) for _, c, length, _ in batches)
        return contraction, backward, recomputed * ATTENTION_S_PER_SCORE, row_work * row_seconds

    terms = batches_seconds(plan)
    contraction, backward, attention, rows = terms
    seconds = record + sum(terms)
    seconds_low = seconds
    if prompt is None and n_targets > 1:  # the prompt may need a single salient logit
        low_plan = _plan(
            n_pos, n_layers, 1, activity.mean * n_layers, n_selected, budgeted, batch_size, max_batch_tokens
        )
        seconds_low = record + sum(batches_seconds(low_plan))
    return Estimate(
        peak_bytes=int(peak),
        seconds=seconds,
        seconds_low=seconds_low,
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
            "stored rows": stored,
            "largest batch (transient)": transient,
            "packaging copies": packaging,
        },
        time_breakdown={
            "clean run": record,
            "feature contraction": contraction,
            "replay backward": backward,
            "attention recomputed": attention,
            "edge processing": rows,
        },
    )


def _activity(active: float | Activity) -> Activity:
    if isinstance(active, Activity):
        return active
    return Activity(mean=float(active), busiest=BUSIEST_OVER_MEAN * float(active))
