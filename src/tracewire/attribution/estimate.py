"""Predict an attribution run's peak memory and time before starting it.

The model mirrors what the engine allocates (see ``engine``, ``rows``, ``components``):

- fixed: the model and transcoder weights, the interpreter with torch loaded;
- phase 1: the clean run's site tensors, the error vectors, the sparse activation list, one
  layer's dense activations;
- phase 2: the stored rows (COO: 8 + 8 + 4 bytes per edge) plus one batch's transient tensors
  (replay activations and gradients for ``B × prefix`` positions, the feature-edge block);
- packaging: the concatenated edges and their remapped copy.

Active features per token are measured on a short calibration text with the real transcoders
(the dominant unknown); the cone averages assume targets spread evenly over positions and layers.
Constants were fitted on this project's benchmark machine (2-core Zen 4); ``benchmarks/
attribution.py`` prints predicted vs measured so drift shows up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from tracewire.attribution.components import BLOCK_CACHE_BYTES
from tracewire.attribution.engine import AUTO_CAP, AUTO_CAP_ABOVE
from tracewire.attribution.replays import REPLAY_CACHE_BYTES
from tracewire.models.loading import LoadedModel

GIB = 2**30
#: Resident memory of a Python process with torch and transformers imported (measured: ~0.55 GiB).
BASELINE_BYTES = int(0.55 * GIB)
#: Effective throughput of the replay forward + backward (dense GEMMs on small batches), FLOP/s.
REPLAY_FLOPS = 25e9
#: Effective throughput of the gather-and-dot feature contraction (memory bound), FLOP/s.
CONTRACT_FLOPS = 6e9
#: Fixed cost per backward pass (Python, autograd bookkeeping, hook dispatch), seconds.
BATCH_OVERHEAD_S = 0.03


@dataclass
class Estimate:
    peak_bytes: int
    seconds: float
    n_active_features: int
    n_rows: int
    n_edges: int
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def summary(self) -> str:
        lines = [
            f"predicted peak memory: {self.peak_gib:.2f} GiB, time: ~{self.seconds:.0f} s",
            f"active features: {self.n_active_features:,}, rows: {self.n_rows:,}, edges: {self.n_edges:,}",
        ]
        lines += [f"  {name}: {value / GIB:.2f} GiB" for name, value in self.breakdown.items()]
        return "\n".join(lines)


@torch.no_grad()
def active_per_token(loaded: LoadedModel, transcoders: Any) -> float:
    """Mean number of active features per token and layer on the calibration text."""
    from tracewire.replacement.model import ReplacementModel
    from tracewire.transcoders.calibrated import CALIBRATION_TEXT

    run = ReplacementModel(loaded, transcoders).record(loaded.encode(CALIBRATION_TEXT))
    counts = []
    for layer in range(loaded.n_layers):
        acts = transcoders.encode(layer, run.transcoder_inputs[layer][0, 1:])
        counts.append(float((acts != 0).sum(-1).float().mean()))
    return sum(counts) / len(counts)


def estimate_attribution(
    loaded: LoadedModel,
    transcoders: Any,
    *,
    n_tokens: int,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    max_n_logits: int = 10,
    max_batch_tokens: int = 4096,
    active: float | None = None,
) -> Estimate:
    """Estimate one ``attribute`` call on a prompt of ``n_tokens`` tokens (BOS included)."""
    per_token = active if active is not None else active_per_token(loaded, transcoders)
    n_layers, d_model, d_tc = loaded.n_layers, loaded.d_model, transcoders.d_transcoder
    element = torch.finfo(loaded.dtype).bits // 8
    n_pos = n_tokens
    n_features = int(per_token * n_layers * max(1, n_pos - 1))
    n_selected = n_features if max_feature_nodes is None else min(max_feature_nodes, n_features)
    cap = None if n_features <= AUTO_CAP_ABOVE else AUTO_CAP
    n_rows = max_n_logits + n_selected

    params = sum(p.numel() for p in loaded.model.parameters()) * element
    tc_params = sum(p.numel() * p.element_size() for p in transcoders.parameters())
    site_tensors = 4 * n_layers * n_pos * d_model * 4  # inputs, outputs, values, errors
    sparse = n_features * 28
    dense_layer = 2 * n_pos * d_tc * 4
    phase1 = site_tensors + sparse + dense_layer

    # rows: logit rows see the whole cone; feature rows on average a quarter of it (half the
    # positions, half the layers) when all features are rows, more when a budget picks late ones.
    cone = 0.25 if max_feature_nodes is None else 0.4
    feat_logit = n_features if cap is None else min(cap, n_features)
    feat_row = n_features * cone if cap is None else min(cap, n_features * cone)
    entries_logit = feat_logit + n_layers * n_pos + n_pos
    entries_feature = feat_row + cone * n_layers * n_pos + 0.5 * n_pos
    n_edges = int(max_n_logits * entries_logit + n_selected * entries_feature)
    stored = n_edges * 20
    length = n_pos
    batch = max(1, min(batch_size, max_batch_tokens // max(1, length)))
    transient = (
        8 * n_layers * batch * length * d_model * 4  # replay activations + gradients
        + batch * n_features * 28  # feature-edge block, its columns and the stacked copy
    )
    packaging = int(stored * 1.6)
    # padded decoder blocks (cached up to BLOCK_CACHE_BYTES) and retained replays
    n_max = 2.5 * per_token  # busiest position vs the mean, as seen on SmolLM2
    blocks = min(BLOCK_CACHE_BYTES, int(n_layers * n_pos * n_max * d_model * 4))
    replays = min(REPLAY_CACHE_BYTES, 2 * 3 * n_layers * batch * length * d_model * element)
    peak = (
        BASELINE_BYTES
        + params
        + tc_params
        + phase1
        + blocks
        + replays
        + max(stored + transient, stored + packaging)
    )

    # time: replay forward+backward ~ 3 × (forward flops), plus the feature contraction
    n_batches = math.ceil(max_n_logits / batch_size) + math.ceil(n_selected / batch_size)
    layer_flops = 2 * (4 * d_model * d_model + 3 * d_model * loaded.config.intermediate_size // 3)
    avg_len = n_pos * (0.5 if max_feature_nodes is None else 0.7)
    replay = 3 * n_rows * avg_len * n_layers * 0.5 * layer_flops
    contract = 2 * (max_n_logits * n_features + n_selected * n_features * cone) * d_model
    record = 2 * n_pos * n_layers * (layer_flops + 2 * d_tc * d_model)
    seconds = (replay + record) / REPLAY_FLOPS + contract / CONTRACT_FLOPS + n_batches * BATCH_OVERHEAD_S
    return Estimate(
        peak_bytes=int(peak),
        seconds=seconds,
        n_active_features=n_features,
        n_rows=n_rows,
        n_edges=n_edges,
        breakdown={
            "baseline (python, torch)": BASELINE_BYTES,
            "model weights": params,
            "transcoder weights": tc_params,
            "clean-run tensors": phase1,
            "stored edges": stored,
            "largest batch (transient)": transient,
            "decoder blocks (cached)": blocks,
            "retained replays": replays,
            "packaging copies": packaging,
        },
    )
