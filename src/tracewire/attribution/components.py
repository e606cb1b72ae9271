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

from dataclasses import dataclass, field
from typing import Any

import torch

from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenRun

#: Memory the padded decoder blocks may keep between batches (rebuilt per batch beyond it).
BLOCK_CACHE_BYTES = 2 * 2**30


@dataclass
class DecoderBlock:
    """Decoder rows (scaled by activation) of one source layer, padded per position.

    ``rows[p, r, o]`` is the write into the ``o``-th output layer of the ``r``-th active feature at
    position ``p``; ``pos``/``rank`` locate each feature (relative to ``start``) in the padding.
    """

    start: int
    rows: torch.Tensor  # [n_pos, n_max, n_out, d] float32
    pos: torch.Tensor  # int64 [n]
    rank: torch.Tensor  # int64 [n]

    @staticmethod
    def build(transcoders: Any, comps: Components, layer: int) -> DecoderBlock:
        sl = comps.layer_slice(layer)
        pos = comps.pos[sl]
        n = int(pos.numel())
        counts = torch.bincount(pos, minlength=comps.n_pos)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n, device=pos.device) - first[pos]
        n_max = int(counts.max()) if n else 0
        n_out = len(transcoders.output_layers(layer))
        d_model = comps.errors.shape[-1]
        rows = torch.zeros(comps.n_pos, n_max, n_out, d_model, device=pos.device)
        if n:
            dec = transcoders.decoder_vectors(layer, comps.feature[sl]).float()
            rows[pos, rank] = dec * comps.activation[sl][:, None, None]
        return DecoderBlock(start=sl.start, rows=rows, pos=pos, rank=rank)


@dataclass
class Components:
    n_layers: int
    n_pos: int
    zero_positions: list[int]
    # active features, sorted by (layer, pos, feature)
    layer: torch.Tensor  # int64 [F]
    pos: torch.Tensor  # int64 [F]
    feature: torch.Tensor  # int64 [F]
    activation: torch.Tensor  # float32 [F]
    layer_offsets: torch.Tensor  # int64 [n_layers + 1]: features of layer l are [off[l], off[l+1])
    errors: torch.Tensor  # [n_layers, n_pos, d] (model dtype)
    token_vectors: torch.Tensor  # [n_pos, d]
    blocks: dict[int, DecoderBlock] = field(default_factory=dict)
    block_bytes: int = 0

    @property
    def n_features(self) -> int:
        return int(self.layer.numel())

    def layer_slice(self, layer: int, max_pos: int | None = None) -> slice:
        """Global indices of the features of ``layer`` at positions < ``max_pos``."""
        start, end = int(self.layer_offsets[layer]), int(self.layer_offsets[layer + 1])
        if max_pos is None:
            return slice(start, end)
        cut = int(torch.searchsorted(self.pos[start:end], max_pos, right=False))
        return slice(start, start + cut)

    def decoder_block(self, transcoders: Any, layer: int) -> DecoderBlock:
        """The layer's ``a · W_dec`` rows padded per position (cached while under budget)."""
        block = self.blocks.get(layer)
        if block is not None:
            return block
        block = DecoderBlock.build(transcoders, self, layer)
        size = block.rows.numel() * block.rows.element_size()
        if self.block_bytes + size <= BLOCK_CACHE_BYTES:
            self.blocks[layer] = block
            self.block_bytes += size
        return block

    def nbytes(self) -> int:
        tensors = [self.layer, self.pos, self.feature, self.activation, self.errors, self.token_vectors]
        return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def compute_components(rm: ReplacementModel, run: FrozenRun, zero_positions: list[int]) -> Components:
    ts = rm.transcoders
    if ts is None:
        raise ValueError("attribution needs transcoders: ReplacementModel(model, transcoders)")
    n_layers = rm.n_layers
    inputs = [run.transcoder_inputs[layer][0] for layer in range(n_layers)]
    n_pos = inputs[0].shape[0]
    keep_pos = torch.ones(n_pos, dtype=torch.bool, device=inputs[0].device)
    keep_pos[zero_positions] = False

    layers, poss, feats, acts = [], [], [], []
    offsets = [0]
    reconstruction = [ts.b_dec[layer] + ts.skip(layer, inputs[layer]) for layer in range(n_layers)]
    for layer in range(n_layers):
        dense = ts.encode(layer, inputs[layer])  # [P, d_tc]
        written = ts.decode(layer, dense)  # [P, n_out, d]
        for j, target in enumerate(ts.output_layers(layer)):
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
        zero_positions=list(zero_positions),
        layer=torch.cat(layers),
        pos=torch.cat(poss),
        feature=torch.cat(feats),
        activation=torch.cat(acts),
        layer_offsets=torch.tensor(offsets, dtype=torch.long),
        errors=errors,
        token_vectors=run.embeddings[0].detach(),
    )
