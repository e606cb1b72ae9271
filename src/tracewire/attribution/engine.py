"""``attribute``: the attribution graph of one prompt.

The method is circuit-tracer's (Ameisen et al. 2025), in five phases:

1. **record** — one clean run fixes the local replacement model (frozen attention patterns and
   norm scales, MLPs seen through their transcoders) and gives the last position's logits;
2. **targets** — the output directions the graph explains (``targets.py``), and their rows;
3. **rows in batches** — each graph row is the gradient of one target's linear read-out,
   contracted with every source (``rows.py``), computed batch by batch (``runner.py``);
4. **select** — every active feature gets a row, or, under a budget, the most influential ones,
   best-first by an influence estimate refreshed as rows come in (``selection.py``);
5. **package** — the visited features become the graph's nodes and the edges are remapped.

The engineering differs where its users hurt:

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tracewire.attribution.batching import DEFAULT_MAX_BATCH_TOKENS
from tracewire.attribution.components import Components, compute_components
from tracewire.attribution.contraction import check_contraction
from tracewire.attribution.rows import NodeSpace, RowBatch, auto_row_cap
from tracewire.attribution.runner import BatchSettings, RowRunner
from tracewire.attribution.targets import Targets, TargetSpec, resolve_targets
from tracewire.errors import InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.models.loading import LoadedModel
from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenRun, FrozenState
from tracewire.threads import use_thread_policy
from tracewire.transcoders.base import TranscoderSet

log = logging.getLogger(__name__)

GRAPH_KIND = "tracewire-attribution"


@use_thread_policy("attribution")
def attribute(
    prompt: str | Sequence[int] | torch.Tensor,
    model: ReplacementModel | LoadedModel,
    transcoders: TranscoderSet | None = None,
    *,
    targets: TargetSpec = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int = 64,
    update_interval: int = 4,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    max_row_feature_edges: int | str | None = "auto",
    contraction: str = "auto",
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
    ``rows.AUTO_ROW_STORAGE_BYTES`` and caps rows at ``rows.AUTO_CAP`` beyond; ``None`` keeps all.
    The fraction of |edge| mass dropped is recorded in ``metadata["dropped_edge_mass_fraction"]``.
    ``contraction``: how feature edges are contracted — ``"blocks"`` (padded decoder blocks),
    ``"dense"`` (one ``g @ W_decᵀ`` GEMM per layer and a gather) or ``"auto"`` (a cost model picks
    per layer and batch; see ``contraction.py``). All give the same edges to fp32 rounding.
    """
    replacement, transcoder_set = _replacement_model(model, transcoders)
    _check_row_cap(max_row_feature_edges)
    contraction_path = check_contraction(contraction)
    clock = _PhaseClock()

    prompt_run, run = record_prompt(
        replacement, prompt, targets, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob
    )
    clock.lap("forward")
    recorded = list_sources(replacement, transcoder_set, prompt_run, run)
    del run  # the clean run's activations: only the frozen state is needed from here on
    comps, space = recorded.components, recorded.space
    clock.lap("components")

    budget = comps.n_features if max_feature_nodes is None else min(max_feature_nodes, comps.n_features)
    row_cap = (
        auto_row_cap(len(recorded.targets) + budget, comps.n_features)
        if max_row_feature_edges == "auto"
        else max_row_feature_edges
    )
    assert not isinstance(row_cap, str)
    settings = BatchSettings(batch_size, max_batch_tokens, row_cap, contraction_path)
    rows = RowRunner(
        replacement,
        transcoder_set,
        recorded.state,
        comps,
        space,
        settings,
        total_rows=len(recorded.targets) + budget,
        progress=progress,
    )
    target_nodes = rows.target_rows(recorded.targets)
    clock.lap("target_rows")
    visited, refreshes = select_features(
        rows, recorded.targets, target_nodes, budget, update_interval * batch_size
    )
    rows.close()
    clock.lap("feature_rows")

    graph = package_graph(replacement.loaded, recorded, rows.batches, visited)
    clock.lap("packaging")
    graph.metadata.update(
        _run_metadata(
            replacement.loaded,
            transcoder_set,
            recorded,
            rows,
            settings={
                "max_n_logits": max_n_logits,
                "desired_logit_prob": desired_logit_prob,
                "max_feature_nodes": max_feature_nodes,
                "batch_size": batch_size,
                "update_interval": update_interval,
                "max_batch_tokens": max_batch_tokens,
                "max_row_feature_edges": row_cap,
                "contraction": contraction_path,
                "dtype": str(replacement.loaded.dtype).replace("torch.", ""),
            },
            influence_refreshes=refreshes,
            timings=clock.timings(),
        )
    )
    if verbose:
        log.info(
            "attribution: %d active features, %d nodes, %d edges; %s",
            comps.n_features,
            graph.n_nodes,
            graph.n_edges,
            ", ".join(f"{k} {v:.2f}s" for k, v in graph.metadata["timings"].items()),
        )
        log.info("work: %s", graph.metadata["work"])
    return graph


@dataclass
class PromptRun:
    """Phases 1–2: the prompt's tokens, its zeroed positions and its resolved targets."""

    tokens: torch.Tensor  # int64 [n_pos]
    zero_positions: list[int]
    targets: Targets


@dataclass
class RecordedPrompt(PromptRun):
    """...plus what the rows need: the frozen state, the graph's sources and its node space."""

    state: FrozenState
    components: Components
    space: NodeSpace


def record_prompt(
    replacement: ReplacementModel,
    prompt: str | Sequence[int] | torch.Tensor,
    targets: TargetSpec,
    *,
    max_n_logits: int,
    desired_logit_prob: float,
) -> tuple[PromptRun, FrozenRun]:
    """Tokenize, run the clean forward and resolve the targets from its last logits.

    The BOS position (when the prompt starts with the model's BOS) is zeroed, as in circuit-tracer.
    """
    loaded = replacement.loaded
    tokens = loaded.encode(prompt if not isinstance(prompt, torch.Tensor) else prompt.reshape(-1))
    zero_positions = [0] if loaded.bos_token_id is not None and int(tokens[0]) == loaded.bos_token_id else []
    with torch.no_grad():
        run = replacement.record(tokens)
    assert run.logits is not None
    resolved = resolve_targets(
        loaded, run.logits[0, -1], targets, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob
    )
    return PromptRun(tokens, zero_positions, resolved), run


def list_sources(
    replacement: ReplacementModel, transcoders: TranscoderSet, prompt: PromptRun, run: FrozenRun
) -> RecordedPrompt:
    """The graph's sources (active features, errors, tokens) from the clean run, and its node space."""
    comps = compute_components(transcoders, run, prompt.zero_positions)
    space = NodeSpace(comps.n_features, replacement.n_layers, comps.n_pos, len(prompt.targets))
    if space.size >= 2**31:
        raise InvalidArgumentError(f"{space.size} nodes exceed the int32 edge index; use a shorter prompt")
    return RecordedPrompt(prompt.tokens, prompt.zero_positions, prompt.targets, run.state, comps, space)


def select_features(
    rows: RowRunner, targets: Targets, target_nodes: torch.Tensor, budget: int, chunk: int
) -> tuple[torch.Tensor, int]:
    """Compute feature rows: all of them, or ``budget`` best-first by estimated influence,
    re-estimated every ``chunk`` rows. Returns the visited feature ids and the refresh count."""
    n_features = rows.comps.n_features
    if budget >= n_features:
        everything = torch.arange(n_features, device=rows.comps.pos.device)
        rows.feature_rows(everything)
        return everything.cpu(), 0
    visited: list[torch.Tensor] = []
    is_visited = torch.zeros(n_features, dtype=torch.bool)
    remaining, refreshes = budget, 0
    while remaining > 0:
        influence = rows.influence(targets, target_nodes)[:n_features]
        refreshes += 1
        influence[is_visited] = -1.0
        pick = torch.topk(influence, min(max(1, chunk), remaining)).indices
        is_visited[pick] = True
        remaining -= int(pick.numel())
        rows.feature_rows(pick.to(rows.comps.pos.device))
        visited.append(pick)
    if not visited:  # a budget of 0: target rows only
        return torch.zeros(0, dtype=torch.long), refreshes
    return torch.cat(visited), refreshes


def package_graph(
    loaded: LoadedModel, recorded: RecordedPrompt, batches: list[RowBatch], visited: torch.Tensor
) -> Graph:
    """Keep the visited features as nodes (sorted by layer, position, feature) and remap edges."""
    comps, space, targets, tokens = recorded.components, recorded.space, recorded.targets, recorded.tokens
    selected = torch.unique(visited)  # sorted global ids = (layer, pos, feature) order
    n_selected = int(selected.numel())
    remap = torch.full((space.size,), -1, dtype=torch.long)
    remap[selected] = torch.arange(n_selected)
    tail = torch.arange(space.error_offset, space.size)
    remap[tail] = n_selected + (tail - space.error_offset)
    kept = [batch.select(remap) for batch in batches]  # per batch, so only kept edges are ever copied
    edge_targets = remap[torch.cat([rows for rows, _, _ in kept])]
    edge_sources = torch.cat([cols for _, cols, _ in kept])
    edge_weights = torch.cat([values for _, _, values in kept])
    del kept
    features = torch.stack(
        [comps.layer.cpu()[selected], comps.pos.cpu()[selected], comps.feature.cpu()[selected]], dim=1
    )
    return Graph(
        prompt=loaded.tokenizer.decode(tokens.tolist()) if loaded.tokenizer is not None else "",
        tokens=tokens.cpu(),
        token_strings=loaded.token_strings(tokens),
        n_layers=space.n_layers,
        features=features,
        activations=comps.activation.cpu()[selected].float(),
        target_labels=list(targets.labels),
        target_token_ids=targets.token_ids.cpu(),
        target_probabilities=targets.probabilities.cpu().float(),
        target_vectors=targets.vectors.detach().cpu().float(),
        edge_targets=edge_targets,
        edge_sources=edge_sources,
        edge_weights=edge_weights.float(),
        metadata={"n_pos": space.n_pos},
    )


def _run_metadata(
    loaded: LoadedModel,
    transcoders: TranscoderSet,
    recorded: RecordedPrompt,
    rows: RowRunner,
    *,
    settings: dict[str, Any],
    influence_refreshes: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    """What the graph file records about its run (keys in ``docs/graph-format.md``).

    ``scan`` and ``d_model`` are the keys the Neuronpedia exporter and importer read.
    """
    config = transcoders.config
    return {
        "kind": GRAPH_KIND,
        "model": loaded.name,
        "model_source": loaded.source,
        "scan": config.scan or config.model_name or loaded.name,
        "transcoder_kind": config.kind,
        "settings": settings,
        "zero_positions": recorded.zero_positions,
        "n_active_features": recorded.components.n_features,
        "influence_refreshes": influence_refreshes,
        "work": {
            "backward_passes": len(rows.batches),
            "replay_forwards": rows.replays.forwards,
            "position_layers_touched": rows.position_layers_touched,
        },
        "dropped_edge_mass_fraction": rows.dropped_edge_mass_fraction(),
        "vocab_size": loaded.vocab_size,
        "d_model": loaded.d_model,
        "timings": timings,
    }


def _replacement_model(
    model: ReplacementModel | LoadedModel, transcoders: TranscoderSet | None
) -> tuple[ReplacementModel, TranscoderSet]:
    replacement = model if isinstance(model, ReplacementModel) else ReplacementModel(model, transcoders)
    return replacement, _transcoders_of(replacement)


def _transcoders_of(replacement: ReplacementModel) -> TranscoderSet:
    """The replacement model's transcoders; attribution cannot run without them."""
    if replacement.transcoders is None:
        raise InvalidArgumentError("attribute() needs transcoders: pass ReplacementModel(model, transcoders)")
    transcoders: TranscoderSet = replacement.transcoders
    return transcoders


def _check_row_cap(value: object) -> None:
    if value == "auto" or value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return
    raise InvalidArgumentError(f"max_row_feature_edges must be an int, None or 'auto', got {value!r}")


class _PhaseClock:
    """Seconds per phase, each lap measured from the end of the previous one."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self._timings: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self._timings[phase] = now - self._last
        self._last = now

    def timings(self) -> dict[str, float]:
        return {**self._timings, "total": self._last - self._start}
