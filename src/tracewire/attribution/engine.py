"""``attribute``: the attribution graph of one prompt.

The method is circuit-tracer's (Ameisen et al. 2025): one clean run fixes the local
replacement model; each graph row is the gradient of one target's linear read-out, contracted
with every source. The engineering differs where its users hurt:

- the graph is sparse end to end (COO rows, nothing of size N×N is ever allocated);
- each batch replays only the causal cone of its targets (a prefix of the prompt, up to the
  highest target layer), with batches grouped by (position, layer) so cones are tight;
- the backward never materialises attention patterns for the whole prompt (chunked recompute);
- with a feature budget, influence estimates come from a sparse power iteration.

Conventions (same as circuit-tracer, so graphs are comparable): feature targets read the
pre-activation ``W_enc · x`` (no bias, no nonlinearity); logit targets the demeaned unembedding;
the first position is zeroed when it holds the BOS token (see ``components``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tracewire.attribution.components import Components, compute_components
from tracewire.attribution.replays import ReplayCache
from tracewire.attribution.rows import NodeSpace, RowBatch, RowRequest, compute_rows
from tracewire.attribution.selection import WeightBlock, estimate_influence
from tracewire.attribution.targets import Targets, TargetSpec, resolve_targets
from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.models.loading import LoadedModel
from tracewire.replacement.model import ReplacementModel

log = logging.getLogger(__name__)

GRAPH_KIND = "tracewire-attribution"
#: ``max_row_feature_edges="auto"``: rows keep every feature edge while all rows' feature edges
#: fit in this many bytes (float32, stored dense: 2,058 rows × 55k features at 16 tokens,
#: 522 × 230k at 64 tokens)...
AUTO_ROW_STORAGE_BYTES = 512 * 2**20
#: ...beyond, each row keeps its largest feature edges (errors and tokens are always kept): as
#: many as fit in this many bytes over all rows (12 bytes per COO edge), at least ``AUTO_CAP``.
AUTO_CAPPED_STORAGE_BYTES = 256 * 2**20
AUTO_CAP = 16384


def auto_row_cap(n_rows: int, n_features: int) -> int | None:
    """The per-row feature-edge cap ``"auto"`` picks for ``n_rows`` rows over ``n_features``."""
    if n_rows * n_features * 4 <= AUTO_ROW_STORAGE_BYTES:
        return None
    return max(AUTO_CAP, AUTO_CAPPED_STORAGE_BYTES // (12 * max(1, n_rows)))


def attribute(
    prompt: str | Sequence[int] | torch.Tensor,
    model: ReplacementModel | LoadedModel,
    transcoders: Any | None = None,
    *,
    targets: TargetSpec = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    update_interval: int = 4,
    max_batch_tokens: int = 4096,
    max_row_feature_edges: int | str | None = "auto",
    progress: bool = True,
    verbose: bool = False,
) -> Graph:
    """Build the attribution graph of ``prompt``.

    ``model``: a :class:`ReplacementModel`, or a :class:`LoadedModel` plus ``transcoders``.
    ``targets``: ``None`` (salient logits), tokens (strings or ids) or custom directions.
    ``max_feature_nodes``: feature budget (best-first by estimated influence); ``None`` = all.
    ``batch_size``: targets per backward pass; ``max_batch_tokens`` caps ``batch × prefix length``
    so long prompts use smaller batches instead of more memory.
    ``max_row_feature_edges``: keep only the largest feature edges of each row, a memory bound
    for long prompts. ``"auto"`` keeps every edge while all rows' feature edges fit in
    ``AUTO_ROW_STORAGE_BYTES`` and caps rows at ``AUTO_CAP`` beyond; ``None`` keeps all.
    The fraction of |edge| mass dropped is recorded in ``metadata["dropped_edge_mass_fraction"]``.
    """
    rm = model if isinstance(model, ReplacementModel) else ReplacementModel(model, transcoders)
    if rm.transcoders is None:
        raise InvalidArgumentError("attribute() needs transcoders: pass ReplacementModel(model, transcoders)")
    loaded = rm.loaded
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    tokens = loaded.encode(prompt if not isinstance(prompt, torch.Tensor) else prompt.reshape(-1))
    zero_positions = [0] if loaded.bos_token_id is not None and int(tokens[0]) == loaded.bos_token_id else []
    with torch.no_grad():
        run = rm.record(tokens)
    assert run.logits is not None
    resolved = resolve_targets(
        loaded, run.logits[0, -1], targets, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob
    )
    timings["forward"] = _lap(clock)

    comps = compute_components(rm, run, zero_positions)
    state = run.state
    del run
    n_layers, n_pos, n_all = rm.n_layers, comps.n_pos, comps.n_features
    space = NodeSpace(n_all, n_layers, n_pos, len(resolved))
    if space.size >= 2**31:
        raise InvalidArgumentError(f"{space.size} nodes exceed the int32 edge index; use a shorter prompt")
    timings["components"] = _lap(clock) - timings["forward"]

    budget = n_all if max_feature_nodes is None else min(max_feature_nodes, n_all)
    row_cap: int | None
    if max_row_feature_edges == "auto":
        row_cap = auto_row_cap(len(resolved) + budget, n_all)
    elif max_row_feature_edges is None or isinstance(max_row_feature_edges, int):
        row_cap = max_row_feature_edges
    else:
        raise InvalidArgumentError(
            f"max_row_feature_edges must be an int, None or 'auto', got {max_row_feature_edges!r}"
        )
    collected: list[RowBatch] = []
    visited: list[torch.Tensor] = []
    work = {"ours": 0, "reference": 0, "batches": 0}
    bar = tqdm(total=len(resolved) + budget, desc="attribution rows", unit="row", disable=not progress)

    replays = ReplayCache(rm, state)

    def run_batches(requests: list[RowRequest]) -> None:
        for request in requests:
            length = int(request.pos.max()) + 1
            capacity = _capacity(replays.bucket(length), batch_size, max_batch_tokens)
            batch = compute_rows(
                rm,
                state,
                comps,
                space,
                request,
                replays=replays,
                capacity=capacity,
                max_row_feature_edges=row_cap,
            )
            collected.append(batch)
            work["ours"] += batch.work
            work["batches"] += 1
            bar.update(int(request.node.numel()))

    device = comps.pos.device
    # 1. target rows
    target_nodes = space.target_offset + torch.arange(len(resolved))
    run_batches(
        _batches(
            nodes=target_nodes.to(device),
            layers=torch.full((len(resolved),), n_layers, device=device),
            positions=torch.full((len(resolved),), n_pos - 1, device=device),
            vectors=resolved.vectors,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            bucket=replays.bucket,
        )
    )
    work["reference"] += math.ceil(len(resolved) / batch_size) * batch_size * n_pos * n_layers
    timings["target_rows"] = _lap(clock) - sum(timings.values())

    # 2. feature rows: all of them, or best-first under the budget
    influence_refreshes = 0
    reference_order: list[torch.Tensor] = []
    if budget >= n_all:
        order = torch.arange(n_all, device=device)
        reference_order.append(order)
        _run_features(order, comps, rm, run_batches, batch_size, max_batch_tokens, replays.bucket)
        visited.append(order)
    else:
        is_visited = torch.zeros(n_all, dtype=torch.bool)
        chunk = max(1, update_interval * batch_size)
        remaining = budget
        while remaining > 0:
            influence = _influence(collected, resolved, target_nodes, space)[:n_all]
            influence_refreshes += 1
            influence[is_visited] = -1.0
            take = min(chunk, remaining)
            pick = torch.topk(influence, take).indices
            is_visited[pick] = True
            remaining -= take
            reference_order.append(pick)
            _run_features(
                pick.to(device), comps, rm, run_batches, batch_size, max_batch_tokens, replays.bucket
            )
            visited.append(pick)
    bar.close()
    replays.clear()
    work["replay_forwards"] = replays.forwards
    timings["feature_rows"] = _lap(clock) - sum(timings.values())
    for order in reference_order:
        work["reference"] += _reference_work(order.cpu(), comps.layer.cpu(), batch_size, n_pos)

    graph = _package(loaded, rm, tokens, comps, resolved, space, collected, torch.cat(visited).cpu())
    timings["packaging"] = _lap(clock) - sum(timings.values())
    timings["total"] = _lap(clock)
    dropped = float(sum(b.dropped_abs.sum() for b in collected)) if collected else 0.0
    total = float(sum(b.abs_sums.sum() for b in collected)) if collected else 0.0
    graph.metadata.update(
        {
            "kind": GRAPH_KIND,
            "model": loaded.name,
            "model_source": loaded.source,
            "transcoders": rm.transcoders.config.scan or rm.transcoders.config.model_name,
            "transcoder_kind": rm.transcoders.config.kind,
            "settings": {
                "max_n_logits": max_n_logits,
                "desired_logit_prob": desired_logit_prob,
                "max_feature_nodes": max_feature_nodes,
                "batch_size": batch_size,
                "update_interval": update_interval,
                "max_batch_tokens": max_batch_tokens,
                "max_row_feature_edges": row_cap,
                "dtype": str(loaded.dtype).replace("torch.", ""),
            },
            "zero_positions": zero_positions,
            "n_active_features": n_all,
            "influence_refreshes": influence_refreshes,
            "work": {
                "backward_passes": work["batches"],
                "replay_forwards": work["replay_forwards"],
                "position_layers_touched": work["ours"],
                "reference_position_layers_touched": work["reference"],
                "reference_over_ours": work["reference"] / max(1, work["ours"]),
            },
            "dropped_edge_mass_fraction": dropped / total if total else 0.0,
            "vocab_size": loaded.vocab_size,
            "timings": timings,
        }
    )
    if verbose:
        log.info(
            "attribution: %d active features, %d nodes, %d edges; %s",
            n_all,
            graph.n_nodes,
            graph.n_edges,
            ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()),
        )
        log.info("work: %s", graph.metadata["work"])
    return graph


def _lap(start: float) -> float:
    return time.perf_counter() - start


def _capacity(bucket_length: int, batch_size: int, max_batch_tokens: int) -> int:
    """Copies in a replay of ``bucket_length`` positions: ``batch_size``, fewer for long prefixes."""
    return max(1, min(batch_size, max_batch_tokens // max(1, bucket_length)))


def _batches(
    nodes: torch.Tensor,
    layers: torch.Tensor,
    positions: torch.Tensor,
    vectors: torch.Tensor,
    batch_size: int,
    max_batch_tokens: int,
    bucket: Any,
) -> list[RowRequest]:
    """Cut an ordered list of targets into batches; long prefixes get smaller batches."""
    out = []
    start, n = 0, int(nodes.numel())
    pos_list = positions.tolist()
    while start < n:
        size = batch_size
        while True:
            end = min(n, start + size)
            length = max(pos_list[start:end]) + 1
            if size <= _capacity(bucket(length), batch_size, max_batch_tokens):
                break
            size = max(1, size // 2)
        out.append(RowRequest(nodes[start:end], layers[start:end], positions[start:end], vectors[start:end]))
        start = end
    return out


def _run_features(
    order: torch.Tensor,
    comps: Components,
    rm: ReplacementModel,
    run_batches: Any,
    batch_size: int,
    max_batch_tokens: int,
    bucket: Any,
) -> None:
    """Rows for features ``order`` (global ids), regrouped so each batch's cone is tight.

    A batch costs (copies × replay length × top layer). Sorting by (position, layer) keeps the
    length tight, sorting by (layer, position) keeps the top layer tight; the plan with less
    work wins (short prompts usually prefer layers, long ones positions).
    """
    if order.numel() == 0:
        return
    ts = rm.transcoders
    assert ts is not None
    n = rm.n_layers + 1
    by_pos = order[torch.argsort(comps.pos[order] * n + comps.layer[order], stable=True)]
    by_layer = order[torch.argsort(comps.layer[order] * (comps.n_pos + 1) + comps.pos[order], stable=True)]
    order = min(
        (by_pos, by_layer),
        key=lambda o: _planned_work(
            comps.layer[o].tolist(), comps.pos[o].tolist(), batch_size, max_batch_tokens, bucket
        ),
    )
    layers, feats = comps.layer[order], comps.feature[order]
    vectors = torch.empty(
        order.numel(), comps.errors.shape[-1], dtype=comps.errors.dtype, device=order.device
    )
    for layer in torch.unique(layers).tolist():
        mask = layers == layer
        vectors[mask] = ts.encoder_vectors(layer, feats[mask]).to(vectors.dtype)
    run_batches(_batches(order, layers, comps.pos[order], vectors, batch_size, max_batch_tokens, bucket))


def _planned_work(
    layers: list[int], positions: list[int], batch_size: int, max_batch_tokens: int, bucket: Any
) -> int:
    """Copies × replay length × top layer, summed over the batches ``_batches`` would cut."""
    total, start, n = 0, 0, len(layers)
    while start < n:
        size = batch_size
        while True:
            end = min(n, start + size)
            length = bucket(max(positions[start:end]) + 1)
            capacity = _capacity(length, batch_size, max_batch_tokens)
            if size <= capacity:
                break
            size = max(1, size // 2)
        total += capacity * length * max(layers[start:end])
        start = end
    return total


def _influence(
    collected: list[RowBatch], resolved: Targets, target_nodes: torch.Tensor, space: NodeSpace
) -> torch.Tensor:
    row_nodes = torch.cat([b.row_nodes for b in collected])

    def blocks() -> Iterator[WeightBlock]:
        # one batch at a time: nothing the size of all edges is built
        offset = 0
        for b in collected:
            block = b.influence_weights()
            block.rows += offset
            yield block
            offset += b.n_rows

    return estimate_influence(blocks, row_nodes, resolved.probabilities, target_nodes, space.size)


def _reference_work(order: torch.Tensor, feature_layers: torch.Tensor, batch_size: int, n_pos: int) -> int:
    """What circuit-tracer's backward passes touch for the same rows: every batch covers all
    positions and every layer below the batch's highest target layer."""
    total = 0
    for start in range(0, order.numel(), batch_size):
        top = int(feature_layers[order[start : start + batch_size]].max())
        total += batch_size * n_pos * top
    return total


def _package(
    loaded: LoadedModel,
    rm: ReplacementModel,
    tokens: torch.Tensor,
    comps: Components,
    resolved: Targets,
    space: NodeSpace,
    collected: list[RowBatch],
    visited: torch.Tensor,
) -> Graph:
    """Keep the visited features as nodes (sorted by layer, position, feature) and remap edges."""
    selected = torch.unique(visited)  # sorted global ids = (layer, pos, feature) order
    n_sel = int(selected.numel())
    n_layers, n_pos = space.n_layers, space.n_pos
    remap = torch.full((space.size,), -1, dtype=torch.long)
    remap[selected] = torch.arange(n_sel)
    tail = torch.arange(space.error_offset, space.size)
    remap[tail] = n_sel + (tail - space.error_offset)
    kept = [b.select(remap) for b in collected]  # per batch, so only kept edges are ever copied
    rows = remap[torch.cat([r for r, _, _ in kept])]
    cols = torch.cat([c for _, c, _ in kept])
    values = torch.cat([v for _, _, v in kept])
    del kept
    sel_cpu = selected
    features = torch.stack(
        [comps.layer.cpu()[sel_cpu], comps.pos.cpu()[sel_cpu], comps.feature.cpu()[sel_cpu]], dim=1
    )
    return Graph(
        prompt=loaded.tokenizer.decode(tokens.tolist()) if loaded.tokenizer is not None else "",
        tokens=tokens.cpu(),
        token_strings=loaded.token_strings(tokens),
        n_layers=n_layers,
        features=features,
        activations=comps.activation.cpu()[sel_cpu].float(),
        target_labels=list(resolved.labels),
        target_token_ids=resolved.token_ids.cpu(),
        target_probabilities=resolved.probabilities.cpu().float(),
        target_vectors=resolved.vectors.detach().cpu().float(),
        edge_targets=rows,
        edge_sources=cols,
        edge_weights=values.float(),
        metadata={"n_pos": n_pos},
    )
