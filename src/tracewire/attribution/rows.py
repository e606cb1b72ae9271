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
            return WeightBlock(torch.arange(self.n_rows), self.cols.long(), self.values.abs() / norm[:, None])
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

    with torch.enable_grad():
        if replays is not None:
            replay = replays.get(length, max(batch, capacity or batch))
        else:
            replay = RetainedReplay.from_run(
                replacement.replay(state, length=length, batch=batch, stop_after_layer=top)
            )
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
        grads = torch.autograd.grad(
            reads, inputs, grad_outputs=seeds, allow_unused=True, retain_graph=replays is not None
        )
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

    abs_sums = token_vals.abs().sum(-1) + err_vals.abs().sum((-1, -2))
    dropped = torch.zeros(batch, device=device)
    capped_cols: torch.Tensor | None = None  # [B, cap] when rows keep different feature columns
    if feat_vals.numel():
        abs_sums = abs_sums + feat_vals.abs().sum(-1)
        if max_row_feature_edges is not None and feat_vals.shape[1] > max_row_feature_edges:
            keep = feat_vals.abs().topk(max_row_feature_edges, dim=1).indices
            kept_vals = feat_vals.gather(1, keep)
            dropped = feat_vals.abs().sum(-1) - kept_vals.abs().sum(-1)
            feat_vals, capped_cols = kept_vals, feat_cols[keep]

    err_cols = (
        space.error_offset
        + torch.tensor(grad_layers, device=device, dtype=torch.long)[:, None] * space.n_pos
        + torch.arange(length, device=device)[None, :]
    ).reshape(-1)
    tok_cols = space.token_offset + torch.arange(length, device=device)
    vals = torch.cat([feat_vals, err_vals.reshape(batch, -1), token_vals], dim=1)
    del feat_vals, err_vals, token_vals
    common = dict(
        row_nodes=row_nodes,
        abs_sums=abs_sums.cpu(),
        dropped_abs=dropped.cpu(),
        work=copies * replay_len * min(top, n_layers),
    )
    nonzero = vals != 0
    if capped_cols is None:  # every row has the same columns
        shared = torch.cat([feat_cols, err_cols, tok_cols]).to(torch.int32)
        if int(nonzero.sum()) >= DENSE_MIN_FILL * vals.numel():  # COO would cost more than dense
            return RowBatch(row_index=None, cols=shared.cpu(), values=vals.cpu(), **common)
        b_idx, j_idx = nonzero.nonzero(as_tuple=True)
        cols = shared[j_idx]
    else:
        b_idx, j_idx = nonzero.nonzero(as_tuple=True)
        n_feat = capped_cols.shape[1]
        rest = torch.cat([err_cols, tok_cols])
        is_feat = j_idx < n_feat
        cols = torch.where(
            is_feat, capped_cols[b_idx, j_idx.clamp(max=n_feat - 1)], rest[(j_idx - n_feat).clamp(min=0)]
        ).to(torch.int32)
    return RowBatch(
        row_index=b_idx.to(torch.int32).cpu(),
        cols=cols.cpu(),
        values=vals[b_idx, j_idx].cpu(),
        **common,
    )


def _or_zeros(grad: torch.Tensor | None, replay: RetainedReplay) -> torch.Tensor:
    return replay.zeros() if grad is None else grad
