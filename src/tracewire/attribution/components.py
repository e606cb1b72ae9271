"""Phase 1: the sources of the graph, from one clean run.

- active features: every non-zero transcoder activation, as parallel 1-D tensors sorted by
  (layer, position, feature) — the *global* feature order used while attributing;
- error vectors: ``e[l, p] = mlp_out[l, p] − reconstruction[l, p]`` (reconstruction includes
  the skip path and ``b_dec``), so reconstruction + error is the MLP output exactly;
- token vectors: what the embedding module put into the residual stream at each position.

Zeroed positions: the first position (the BOS token, an attention sink) is zeroed as in
circuit-tracer: its features are not nodes and its error vector is zero, so its MLP outputs are
constants of the local replacement model. Its token node remains.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from tracewire.replacement.state import FrozenRun
from tracewire.transcoders.base import TranscoderSet

#: Memory the padded decoder blocks may keep between batches (rebuilt per batch beyond it).
#: Rebuilding a block is a gather of decoder rows, cheap next to the batch's backward: at 512
#: tokens a run without any cache was *faster* than with 2 GiB of cached blocks, and 2 GiB smaller.
BLOCK_CACHE_BYTES = 256 * 2**20
#: Size of one on-the-fly block when a layer's whole block does not fit the cache. Small enough
#: to stay in the CPU's last-level cache between its gather and its ``bmm`` (at 511 tokens the
#: contraction took 48 s with 64 MiB groups, 21 s with 8–16 MiB, 46 s with 1 MiB, where the
#: per-group overhead dominates).
BLOCK_CHUNK_BYTES = 16 * 2**20


@dataclass
class DecoderBlock:
    """Decoder rows of one source layer's features at positions ``[p0, p0 + rows.shape[0])``,
    padded per position.

    ``rows[p, r, o]`` is what the ``r``-th active feature at position ``p0 + p`` writes into its
    ``o``-th output layer per unit of activation; the block's features are global ids
    ``start .. start + n - 1`` (sorted by position), located in the padding by ``pos`` (relative to
    ``p0``) and ``rank``, with activations ``activation``. Products are scaled by the activation
    *after* the ``bmm`` (``[B, n]`` multiplications instead of ``[n, d]``), and padding slots hold
    an arbitrary real row whose products are never read back, so the block is written by a single
    gather — no zero-fill, scatter or scaling pass over the largest tensor of a batch.
    """

    p0: int
    start: int
    rows: torch.Tensor  # [positions, n_max, n_out, d] float32
    pos: torch.Tensor  # int64 [n]
    rank: torch.Tensor  # int64 [n]
    activation: torch.Tensor  # float32 [n]
    #: A *group* block (:meth:`build_group`) covers these positions, in row order, instead of
    #: ``p0 ..``; its features are ``ids`` (global, not contiguous) and ``pos`` indexes ``positions``.
    positions: torch.Tensor | None = None
    ids: torch.Tensor | None = None

    @staticmethod
    def build(transcoders: TranscoderSet, comps: Components, layer: int, p0: int, p1: int) -> DecoderBlock:
        lo = comps.layer_slice(layer, max_pos=p0).stop
        hi = comps.layer_slice(layer, max_pos=p1).stop
        pos = comps.pos[lo:hi] - p0
        n = hi - lo
        counts = torch.bincount(pos, minlength=p1 - p0)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n, device=pos.device) - first[pos]
        n_max = int(comps.position_offsets[layer, p0 : p1 + 1].diff().max()) if n else 0  # host: no sync
        n_out = len(transcoders.output_layers(layer))
        d_model = comps.errors.shape[-1]
        shape = (p1 - p0, n_max, n_out, d_model)
        rows = _padded_rows(transcoders, layer, comps.feature[lo:hi], pos, rank, shape)
        activation = comps.activation[lo:hi].float()
        return DecoderBlock(p0=p0, start=lo, rows=rows, pos=pos, rank=rank, activation=activation)

    @staticmethod
    def build_group(
        transcoders: TranscoderSet, comps: Components, layer: int, positions: torch.Tensor
    ) -> DecoderBlock:
        """The block of ``layer``'s features at ``positions`` (host int64, any order) — positions of
        similar feature counts, so the padding to the busiest of them stays small."""
        counts = comps.position_offsets[layer, positions + 1] - comps.position_offsets[layer, positions]
        n_max = int(counts.max())
        slot = torch.arange(n_max)[None, :]
        valid = slot < counts[:, None]
        row, rank = valid.nonzero(as_tuple=True)
        first = comps.layer_offsets[layer] + comps.position_offsets[layer, positions]
        device = comps.pos.device
        ids = (first[:, None] + slot)[valid].to(device)
        row, rank = row.to(device), rank.to(device)
        n_out = len(transcoders.output_layers(layer))
        shape = (int(positions.numel()), n_max, n_out, comps.errors.shape[-1])
        rows = _padded_rows(transcoders, layer, comps.feature[ids], row, rank, shape)
        return DecoderBlock(
            p0=-1,
            start=-1,
            rows=rows,
            pos=row,
            rank=rank,
            activation=comps.activation[ids].float(),
            positions=positions.to(device),
            ids=ids,
        )


def _padded_rows(
    transcoders: TranscoderSet,
    layer: int,
    feature: torch.Tensor,
    row: torch.Tensor,
    rank: torch.Tensor,
    shape: tuple[int, int, int, int],
) -> torch.Tensor:
    """``[rows, n_max, n_out, d]`` float32 with feature ``feature[i]``'s decoder rows at
    ``(row[i], rank[i])``: one gather from the decoder (padding slots read feature 0, never read
    back), or, for lazy decoders, the active rows read from disk into zeros."""
    if transcoders.lazy_decoder:
        rows = torch.zeros(shape, device=feature.device)
        if feature.numel():
            rows[row, rank] = transcoders.decoder_vectors(layer, feature).float()
        return rows
    slots = torch.zeros(shape[:2], dtype=torch.long, device=feature.device)
    slots[row, rank] = feature
    table = transcoders.full_decoder(layer).reshape(transcoders.d_transcoder, shape[2] * shape[3])
    return table.index_select(0, slots.view(-1).to(table.device)).float().view(shape)


@dataclass
class Components:
    n_layers: int
    n_pos: int
    # active features, sorted by (layer, pos, feature)
    layer: torch.Tensor  # int64 [F]
    pos: torch.Tensor  # int64 [F]
    feature: torch.Tensor  # int64 [F]
    activation: torch.Tensor  # float32 [F]
    layer_offsets: torch.Tensor  # int64 [n_layers + 1]: features of layer l are [off[l], off[l+1])
    errors: torch.Tensor  # [n_layers, n_pos, d] (model dtype)
    token_vectors: torch.Tensor  # [n_pos, d]
    # [n_layers, n_pos + 1] on the host: how many of layer l's features sit at positions < p
    position_offsets: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    blocks: dict[int, DecoderBlock] = field(default_factory=dict)
    block_bytes: int = 0

    def __post_init__(self) -> None:
        if self.position_offsets.numel() == 0:  # once, on the host: no device sync in the row loop
            layer, pos = self.layer.cpu(), self.pos.cpu()
            counts = torch.zeros(self.n_layers, self.n_pos, dtype=torch.long)
            counts.index_put_((layer, pos), torch.ones_like(pos), accumulate=True)
            zero = torch.zeros(self.n_layers, 1, dtype=torch.long)
            self.position_offsets = torch.cat([zero, counts.cumsum(1)], dim=1)  # [n_layers, n_pos + 1]
        self.layer_offsets = self.layer_offsets.cpu()

    @property
    def n_features(self) -> int:
        return int(self.layer.numel())

    def layer_slice(self, layer: int, max_pos: int | None = None) -> slice:
        """Global indices of the features of ``layer`` at positions < ``max_pos``."""
        start, end = int(self.layer_offsets[layer]), int(self.layer_offsets[layer + 1])
        if max_pos is None:
            return slice(start, end)
        return slice(start, start + int(self.position_offsets[layer, min(max(max_pos, 0), self.n_pos)]))

    def busiest_position_count(self, layer: int) -> int:
        """Most active features of ``layer`` at one position (the padded blocks' row count)."""
        return int(self.position_offsets[layer].diff().max())

    def decoder_blocks(self, transcoders: TranscoderSet, layer: int, length: int) -> Iterator[DecoderBlock]:
        """Blocks covering positions ``[0, length)`` of ``layer``'s features.

        The whole layer is one block, cached while the cache is under ``BLOCK_CACHE_BYTES``;
        beyond that (long prompts) group blocks of at most ``BLOCK_CHUNK_BYTES`` are built on the
        fly over positions ``[0, length)``.
        """
        cached = self.blocks.get(layer)
        if cached is not None:
            yield cached
            return
        sl = self.layer_slice(layer)
        if sl.stop == sl.start:
            return
        n_max = self.busiest_position_count(layer)
        per_pos = len(transcoders.output_layers(layer)) * self.errors.shape[-1] * 4
        full_bytes = self.n_pos * n_max * per_pos
        if self.block_bytes + full_bytes <= BLOCK_CACHE_BYTES:
            block = DecoderBlock.build(transcoders, self, layer, 0, self.n_pos)
            self.blocks[layer] = block
            self.block_bytes += full_bytes
            yield block
            return
        # Positions busiest first, cut into groups of at most BLOCK_CHUNK_BYTES: each group is
        # padded to its own busiest position, so the gathered rows are ~1.15× the active ones
        # instead of ~2× for runs of consecutive positions (measured at 511 tokens).
        counts = self.position_offsets[layer, 1 : length + 1] - self.position_offsets[layer, :length]
        order = torch.argsort(counts, descending=True, stable=True)
        start = 0
        while start < length:
            busiest = int(counts[order[start]])
            if busiest == 0:
                return  # the remaining positions have no features
            step = max(1, BLOCK_CHUNK_BYTES // (busiest * per_pos))
            yield DecoderBlock.build_group(transcoders, self, layer, order[start : start + step])
            start += step


@torch.no_grad()
def compute_components(transcoders: TranscoderSet, run: FrozenRun, zero_positions: list[int]) -> Components:
    """The sources of the graph from the clean ``run`` (see the module docstring)."""
    n_layers = transcoders.n_layers
    inputs = [run.transcoder_inputs[layer][0] for layer in range(n_layers)]
    n_pos = inputs[0].shape[0]
    keep_pos = torch.ones(n_pos, dtype=torch.bool, device=inputs[0].device)
    keep_pos[zero_positions] = False

    layers, poss, feats, acts = [], [], [], []
    offsets = [0]
    reconstruction = [
        transcoders.b_dec[layer] + transcoders.skip(layer, inputs[layer]) for layer in range(n_layers)
    ]
    for layer in range(n_layers):
        dense = transcoders.encode(layer, inputs[layer])  # [P, d_tc]
        written = transcoders.decode(layer, dense)  # [P, n_out, d]
        for j, target in enumerate(transcoders.output_layers(layer)):
            reconstruction[target] = reconstruction[target] + written[:, j]
        dense = dense * keep_pos[:, None]
        pos_idx, feat_idx = dense.nonzero(as_tuple=True)  # sorted by (pos, feature)
        layers.append(torch.full_like(pos_idx, layer))
        poss.append(pos_idx)
        feats.append(feat_idx)
        acts.append(dense[pos_idx, feat_idx].float())
        offsets.append(offsets[-1] + pos_idx.numel())
        del dense, written

    errors = torch.stack([run.output_values[layer][0] - reconstruction[layer] for layer in range(n_layers)])
    errors[:, ~keep_pos] = 0
    assert run.embeddings is not None
    return Components(
        n_layers=n_layers,
        n_pos=n_pos,
        layer=torch.cat(layers),
        pos=torch.cat(poss),
        feature=torch.cat(feats),
        activation=torch.cat(acts),
        layer_offsets=torch.tensor(offsets, dtype=torch.long),
        errors=errors,
        token_vectors=run.embeddings[0].detach(),
    )
