"""Phase 2: attribution rows by injected gradients, restricted to the causal cone.

One *row* holds the direct effects of every source on one target node. For a batch of targets
the engine replays the frozen (exactly linear) model on ``B`` copies of the prompt's *prefix*
up to the batch's last target position, stopping right after the highest target layer; each
copy's scalar read-out is its own target (a feature's encoder row dotted with the transcoder
input — its pre-activation without bias — or a demeaned logit direction dotted with the final
residual). One backward pass then gives, per copy, the gradient at every MLP output site and at
the embeddings, which contract with the sources:

- feature ``s`` (layer ``i``, position ``p``): ``Σ_{l'} a_s ⟨W_dec^{i→l'}[s], ∂g/∂y_{l'}[p]⟩``;
- error ``(l, p)``: ``⟨e[l, p], ∂g/∂y_l[p]⟩``; token ``p``: ``⟨emb[p], ∂g/∂emb[p]⟩``.

Work outside the cone — positions after the target, layers above it — is never done: the
replay is a prefix and stops early. Exact zeros (outside a row's own cone) are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.graph import get_gradient_edge

from tracewire.attribution.components import Components
from tracewire.attribution.contraction import Contraction, feature_edges
from tracewire.attribution.replays import ReplayCache, RetainedReplay
from tracewire.attribution.selection import WeightBlock
from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenState
from tracewire.transcoders.base import TranscoderSet

#: ``max_row_feature_edges="auto"``: rows keep every feature edge while all rows' feature edges
#: fit in this many bytes (float32, stored dense: 2,058 rows × 55k features at 16 tokens,
#: 522 × 230k at 64 tokens)...
AUTO_ROW_STORAGE_BYTES = 512 * 2**20
#: ...beyond, each row keeps its largest feature edges (errors and tokens are always kept): as
#: many as fit in this many bytes over all rows (12 bytes per COO edge), at least ``AUTO_CAP``.
AUTO_CAPPED_STORAGE_BYTES = 256 * 2**20
AUTO_CAP = 16384

#: A batch whose rows share their columns is stored dense when at least this fraction of its
#: entries is non-zero (COO costs 12 bytes per non-zero, dense 4 per entry).
DENSE_MIN_FILL = 1 / 3
#: Float32 edges packaged at once (a slice of a batch's rows; see ``_package``).
PACKAGE_SLICE_BYTES = 64 * 2**20


@dataclass
class RowRequest:
    """A batch of targets: layer ``n_layers`` means "read the final residual" (a logit)."""

    node: torch.Tensor  # int64 [B] row node ids (global attribution index space)
    layer: torch.Tensor  # int64 [B]
    pos: torch.Tensor  # int64 [B]
    vector: torch.Tensor  # [B, d] read-out direction


@dataclass
class RowBatch:
    """One batch's rows, stored the cheaper of two ways.

    - dense: every row has the same columns (no per-row cap) and most entries are non-zero — the
      usual case for short prompts, where a row touches nearly every feature in its cone.
      ``values`` is ``[B, n]`` over the shared ``cols [n]`` and ``row_index`` is ``None``:
      4 bytes per entry, as a dense edge matrix, instead of 12 for COO;
    - COO: ``row_index``, ``cols`` and ``values`` are parallel ``[E]`` tensors of the non-zeros.
    """

    row_nodes: torch.Tensor  # int64 [B] the batch's row nodes, aligned with abs_sums
    row_index: torch.Tensor | None  # int32 [E] which of the batch's rows each edge is in (COO)
    cols: torch.Tensor  # int32 [E] (COO) or [n] (dense) source node ids
    values: torch.Tensor  # float32 [E] (COO) or [B, n] (dense)
    abs_sums: torch.Tensor  # float32 [B] Σ|A| over every source (before any per-row cap)
    dropped_abs: torch.Tensor  # float32 [B] Σ|A| of feature edges dropped by the per-row cap
    work: int  # positions × layers touched by this batch's replay/backward, times B

    @property
    def n_rows(self) -> int:
        return int(self.row_nodes.numel())

    @property
    def nbytes(self) -> int:
        tensors = [self.cols, self.values] + ([self.row_index] if self.row_index is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def coo(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(row_index, cols, values)`` as int64/int64/float tensors (a transient copy for dense)."""
        if self.row_index is not None:
            return self.row_index.long(), self.cols.long(), self.values
        n = int(self.cols.numel())
        rows = torch.arange(self.n_rows).repeat_interleave(n)
        return rows, self.cols.long().repeat(self.n_rows), self.values.reshape(-1)

    def influence_weights(self) -> WeightBlock:
        """Row-normalised ``|A|`` (each row by its Σ|A| over every source) for influence estimates."""
        norm = self.abs_sums.clamp_min(1e-10)
        if self.row_index is None:
            return WeightBlock(torch.arange(self.n_rows), self.cols.long(), self.values, norm)
        rows = self.row_index.long()
        return WeightBlock(rows, self.cols.long(), self.values.abs() / norm[rows])

    def select(self, remap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Non-zero edges whose source ``remap`` keeps (``remap[col] >= 0``), remapped:
        ``(row node ids, new source ids, values)``."""
        if self.row_index is None:
            new_cols = remap[self.cols.long()]
            keep = (new_cols >= 0).nonzero().squeeze(1)
            vals = self.values[:, keep]
            b_idx, j_idx = (vals != 0).nonzero(as_tuple=True)
            return self.row_nodes[b_idx], new_cols[keep][j_idx], vals[b_idx, j_idx]
        new_cols = remap[self.cols.long()]
        keep = new_cols >= 0
        return self.row_nodes[self.row_index.long()[keep]], new_cols[keep], self.values[keep]


def auto_row_cap(n_rows: int, n_features: int) -> int | None:
    """The per-row feature-edge cap ``"auto"`` picks for ``n_rows`` rows over ``n_features``."""
    if n_rows * n_features * 4 <= AUTO_ROW_STORAGE_BYTES:
        return None
    return max(AUTO_CAP, AUTO_CAPPED_STORAGE_BYTES // (12 * max(1, n_rows)))


class NodeSpace:
    """The index space used while attributing: ``[all active features | errors | tokens | targets]``."""

    def __init__(self, n_features: int, n_layers: int, n_pos: int, n_targets: int) -> None:
        self.n_features, self.n_layers, self.n_pos, self.n_targets = n_features, n_layers, n_pos, n_targets
        self.error_offset = n_features
        self.token_offset = n_features + n_layers * n_pos
        self.target_offset = self.token_offset + n_pos
        self.size = self.target_offset + n_targets


def compute_rows(
    replacement: ReplacementModel,
    transcoders: TranscoderSet,
    state: FrozenState,
    comps: Components,
    space: NodeSpace,
    request: RowRequest,
    *,
    replays: ReplayCache | None = None,
    capacity: int | None = None,
    max_row_feature_edges: int | None = None,
    contraction: Contraction = "auto",
) -> RowBatch:
    """Rows for one batch of targets (see the module docstring).

    With ``replays``, a retained replay of the batch's length bucket with ``capacity`` copies is
    reused (its forward paid once); otherwise a fresh prefix replay stops at the top layer.
    ``contraction`` picks how feature edges are contracted (``contraction.py``).
    """
    n_layers = replacement.n_layers
    batch = int(request.node.numel())
    layers = request.layer.tolist()
    positions = request.pos.tolist()
    length = max(positions) + 1
    top = max(layers)  # the replay stops after this layer's transcoder input (n_layers: final norm)

    shared = replays is not None and not _own_replay_pays(replays, length, batch, capacity)
    with torch.enable_grad():
        if shared:
            assert replays is not None
            replay = replays.get(length, max(batch, capacity or batch))
        else:
            replay = RetainedReplay.from_run(
                replacement.replay(state, length=length, batch=batch, stop_after_layer=top)
            )
            if replays is not None:
                replays.forwards += 1
        # each target reads its site at its own copy and position: seed the backward there
        device = replay.embeddings.device
        vector = request.vector.to(device=device, dtype=replay.embeddings.dtype)
        pos_all = request.pos.to(device)
        reads, seeds = [], []
        for layer in sorted(set(layers)):
            rows_t = torch.tensor([b for b in range(batch) if layers[b] == layer], device=device)
            site = replay.final if layer >= n_layers else replay.inputs.get(layer)
            if site is None:
                raise RuntimeError(f"the replay has no read-out site for layer {layer}")
            seed = replay.zeros()
            seed[rows_t, pos_all[rows_t]] = vector[rows_t]
            reads.append(site)
            seeds.append(seed)
        grad_layers = list(range(min(top, n_layers)))
        copies, replay_len = replay.copies, replay.length
        inputs = [get_gradient_edge(replay.embeddings), *(replay.outputs[layer] for layer in grad_layers)]
        grads = torch.autograd.grad(reads, inputs, grad_outputs=seeds, allow_unused=True, retain_graph=shared)
        del seeds
    grad_emb = _or_zeros(grads[0], replay)[:batch, :length].float()
    grad_out = {
        layer: _or_zeros(g, replay)[:batch, :length].float() for layer, g in zip(grad_layers, grads[1:])
    }
    del replay, grads

    row_nodes = request.node.cpu()
    device = grad_emb.device
    # tokens
    token_vals = torch.einsum("bpd,pd->bp", grad_emb, comps.token_vectors[:length].float())  # [B, length]
    # errors
    if grad_layers:
        err_vals = torch.stack(
            [
                torch.einsum("bpd,pd->bp", grad_out[layer], comps.errors[layer, :length].float())
                for layer in grad_layers
            ],
            dim=1,
        )  # [B, top, length]
    else:
        err_vals = torch.zeros(batch, 0, length, device=device)
    # features
    feat_cols, feat_vals = feature_edges(
        transcoders, comps, grad_out, grad_layers, length, batch, contraction
    )

    err_cols = (
        space.error_offset
        + torch.tensor(grad_layers, device=device, dtype=torch.long)[:, None] * space.n_pos
        + torch.arange(length, device=device)[None, :]
    ).reshape(-1)
    tok_cols = space.token_offset + torch.arange(length, device=device)
    rest_vals = torch.cat([err_vals.reshape(batch, -1), token_vals], dim=1)  # [B, E + T]
    del err_vals, token_vals, grad_out, grad_emb
    rest_cols = torch.cat([err_cols, tok_cols])
    work = copies * replay_len * min(top, n_layers)
    return _package(row_nodes, feat_cols, feat_vals, rest_cols, rest_vals, max_row_feature_edges, work)


def _row_slices(batch: int, width: int) -> list[slice]:
    """Rows packaged together: at most :data:`PACKAGE_SLICE_BYTES` of float32 edges at once."""
    step = max(1, PACKAGE_SLICE_BYTES // max(1, 4 * width))
    return [slice(r, min(batch, r + step)) for r in range(0, batch, step)]


def _package(
    row_nodes: torch.Tensor,
    feat_cols: torch.Tensor,
    feat_vals: torch.Tensor,
    rest_cols: torch.Tensor,
    rest_vals: torch.Tensor,
    cap: int | None,
    work: int,
) -> RowBatch:
    """One batch's edges as a :class:`RowBatch`: per-row cap, then dense or COO storage.

    Rows are processed a slice at a time (:func:`_row_slices`), so what a batch allocates beyond
    its contraction output ``feat_vals [B, n]`` and the stored edges is bounded by a slice, not by
    ``B × n`` — at 4,095 tokens ``n`` is ~17M features, and whole-batch temporaries (|values|,
    the concatenation, the non-zero scan) were ~80 bytes per copy and feature, which is what
    limited how many copies a backward pass could hold.
    """
    batch, n_feat = feat_vals.shape
    width = n_feat + rest_vals.shape[1]
    slices = _row_slices(batch, width)
    abs_sums = rest_vals.abs().sum(-1)
    for rows in slices:
        abs_sums[rows] += feat_vals[rows].abs().sum(-1)
    if cap is not None and n_feat > cap:  # each row keeps its own largest feature edges: COO
        parts, dropped = [], torch.zeros(batch, device=feat_vals.device)
        for rows in slices:
            magnitude = feat_vals[rows].abs()
            keep = magnitude.topk(cap, dim=1).indices
            kept = feat_vals[rows].gather(1, keep)
            dropped[rows] = magnitude.sum(-1) - kept.abs().sum(-1)
            del magnitude
            parts.append(_coo(rows.start, feat_cols[keep], kept, rest_cols, rest_vals[rows]))
        return RowBatch(row_nodes, *_concat(parts), abs_sums.cpu(), dropped.cpu(), work)
    nonzero = torch.count_nonzero(rest_vals) + sum(torch.count_nonzero(feat_vals[rows]) for rows in slices)
    no_drop = torch.zeros(batch)
    shared = torch.cat([feat_cols, rest_cols]).to(torch.int32)
    if int(nonzero) >= DENSE_MIN_FILL * batch * width:  # COO would cost more than dense
        values = torch.cat([feat_vals, rest_vals], dim=1)
        return RowBatch(row_nodes, None, shared.cpu(), values.cpu(), abs_sums.cpu(), no_drop, work)
    parts = [
        _coo(
            rows.start,
            feat_cols.expand(rows.stop - rows.start, -1),
            feat_vals[rows],
            rest_cols,
            rest_vals[rows],
        )
        for rows in slices
    ]
    return RowBatch(row_nodes, *_concat(parts), abs_sums.cpu(), no_drop, work)


def _coo(
    first_row: int,
    feat_cols: torch.Tensor,
    feat_vals: torch.Tensor,
    rest_cols: torch.Tensor,
    rest_vals: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero edges of rows ``first_row ..``: ``(row index, column, value)``; ``feat_cols``
    is per row (``[rows, n]``), ``rest_cols`` shared (``[E + T]``)."""
    n_feat = feat_vals.shape[1]
    vals = torch.cat([feat_vals, rest_vals], dim=1)
    b_idx, j_idx = (vals != 0).nonzero(as_tuple=True)
    is_feat = j_idx < n_feat
    cols = torch.where(
        is_feat,
        feat_cols[b_idx, j_idx.clamp(max=max(n_feat - 1, 0))] if n_feat else j_idx,
        rest_cols[(j_idx - n_feat).clamp(min=0)],
    )
    return (b_idx + first_row).to(torch.int32), cols.to(torch.int32), vals[b_idx, j_idx]


def _concat(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The slices' COO parts as one ``(row index, columns, values)`` on the host."""
    return tuple(torch.cat([part[i] for part in parts]).cpu() for i in range(3))  # type: ignore[return-value]


def _own_replay_pays(replays: ReplayCache, length: int, batch: int, capacity: int | None) -> bool:
    """Whether a batch filling at most half of its shared replay (the targets' batch, a last
    short batch) should replay a prefix of its own: the shared replay's backward runs all its
    copies, empty ones included, while an own replay costs one forward of just the batch — cheap
    while attention patterns are kept (at 511 tokens, one target row on a 16-copy replay ran
    15 copies' backward for nothing), not when a long prompt's forward recomputes them."""
    return capacity is not None and batch * 2 <= capacity and replays.keeps_patterns(length)


def _or_zeros(grad: torch.Tensor | None, replay: RetainedReplay) -> torch.Tensor:
    return replay.zeros() if grad is None else grad
