"""Feature edges of a batch of rows: gradients at the MLP outputs contracted with decoder rows.

A feature ``s`` (source layer ``i``, position ``p``, feature ``f``) gets, in row ``b``,
``a_s Σ_{o} ⟨W_dec^{i→o}[f], ∂g_b/∂y_o[p]⟩``. Two ways compute exactly that sum:

- **blocks** — features at one position share the gradient there, so the contraction is one
  small GEMM per position, batched as ``bmm`` over positions with the decoder rows padded to the
  busiest position (``Components.decoder_blocks``), then scaled by the activations. Cheap while
  the blocks are cached (short prompts); on long prompts the blocks are rebuilt per batch (a
  gather of ``positions × n_max × n_out × d`` floats) and with few copies per batch the ``bmm``
  is a memory-bound matrix-vector product;
- **dense** — one GEMM per source layer, ``g @ W_decᵀ`` for every copy and position at once
  (``[B·P, n_out·d] @ [n_out·d, d_tc]``, compute-bound), then a gather of the active
  ``(position, feature)`` entries, scaled by their activations. It wastes the inactive
  features' products but never builds a block.

:func:`choose_contraction` picks per source layer by a cost model (:class:`CostModel`):
seconds = FLOPs / GEMM rate + bytes moved / memory bandwidth, with the ``bmm`` on padded blocks
costed at the larger of its FLOP and byte time (it is a GEMV when the batch is small). Both paths
agree to fp32 rounding (the sums are associated differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tracewire.attribution.components import Components
from tracewire.errors import InvalidArgumentError
from tracewire.transcoders.base import TranscoderSet

Contraction = Literal["auto", "blocks", "dense"]
CONTRACTIONS: tuple[str, ...] = ("auto", "blocks", "dense")

#: Largest ``[copies × positions, d_tc]`` product the dense path holds at once (float32).
DENSE_CHUNK_BYTES = 128 * 2**20


@dataclass(frozen=True)
class CostModel:
    """Rough seconds of each path on a CPU; only the *ratio* matters for the choice.

    Defaults: ~200 GFLOPS fp32 GEMM and ~10 GB/s effective memory traffic (a 2020s laptop/server
    core complex; ``benchmarks/attribution.py`` prints the measured GEMM rate of the box).
    """

    gemm_flops: float = 2.0e11
    memory_bytes_per_s: float = 1.0e10

    def blocks_seconds(self, copies: int, padded_rows: int, width: int, cached: bool) -> float:
        """``padded_rows`` = positions × busiest position's feature count; ``width`` = n_out × d."""
        block_bytes = 4.0 * padded_rows * width
        bmm = max(2.0 * copies * padded_rows * width / self.gemm_flops, block_bytes / self.memory_bytes_per_s)
        build = 0.0 if cached else block_bytes / self.memory_bytes_per_s  # one gather writes it
        return bmm + build

    def dense_seconds(self, copies: int, positions: int, width: int, d_transcoder: int) -> float:
        flops = 2.0 * copies * positions * width * d_transcoder
        moved = 4.0 * (d_transcoder * width + copies * positions * d_transcoder)
        return flops / self.gemm_flops + moved / self.memory_bytes_per_s


COST_MODEL = CostModel()


def check_contraction(value: object) -> Contraction:
    """``value`` as a contraction setting, or an error naming the allowed ones."""
    if value not in CONTRACTIONS:
        raise InvalidArgumentError(f"contraction must be one of {', '.join(CONTRACTIONS)}; got {value!r}")
    return value  # type: ignore[return-value]


def choose_contraction(
    transcoders: TranscoderSet, comps: Components, source: int, n_out: int, length: int, batch: int
) -> Literal["blocks", "dense"]:
    """The cheaper path for ``source``'s features under :data:`COST_MODEL`.

    Lazy (on-disk) decoders always use blocks: the dense path would read the whole decoder.
    """
    if transcoders.lazy_decoder:
        return "blocks"
    width = n_out * comps.errors.shape[-1]
    cached = source in comps.blocks
    n_max = comps.busiest_position_count(source)
    blocks = COST_MODEL.blocks_seconds(batch, length * n_max, width, cached)
    dense = COST_MODEL.dense_seconds(batch, length, width, transcoders.d_transcoder)
    return "dense" if dense < blocks else "blocks"


def feature_edges(
    transcoders: TranscoderSet,
    comps: Components,
    grad_out: dict[int, torch.Tensor],
    grad_layers: list[int],
    length: int,
    batch: int,
    contraction: Contraction = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n]`` global feature ids in the cone (every feature of each source layer at positions
    ``< length``, in global order) and ``[B, n]`` their edge values.

    ``grad_out[l]`` is ``[B, length, d]`` (float32): the gradient at layer ``l``'s MLP output.
    No ``[B, n_features, d]`` gather is ever built on either path.
    """
    top = len(grad_layers)
    sources = [
        (source, [layer for layer in transcoders.output_layers(source) if layer < top])
        for source in range(top)
    ]
    sources = [(source, outs) for source, outs in sources if outs]
    spans = [comps.layer_slice(source, max_pos=length) for source, _ in sources]
    device = next(iter(grad_out.values())).device if grad_out else comps.pos.device
    cols = torch.cat(
        [torch.zeros(0, dtype=torch.long)] + [torch.arange(sl.start, sl.stop) for sl in spans]
    ).to(device)
    # one output written in place: no per-chunk pieces concatenated (2× the batch's largest array)
    vals = torch.zeros(batch, int(cols.numel()), device=device)
    column = 0
    for (source, out_layers), sl in zip(sources, spans):
        grads = torch.stack([grad_out[layer] for layer in out_layers], dim=2)  # [B, length, n_out, d]
        path = contraction
        if path == "auto":
            path = choose_contraction(transcoders, comps, source, len(out_layers), length, batch)
        contract = _dense_edges if path == "dense" else _block_edges
        for ids, values in contract(transcoders, comps, source, grads, length):
            if isinstance(ids, int):  # features ids .. ids + n - 1
                vals[:, column + ids - sl.start : column + ids - sl.start + values.shape[1]] = values
            else:
                vals.index_copy_(1, column + ids - sl.start, values)
        column += sl.stop - sl.start
    return cols, vals


def _block_edges(
    transcoders: TranscoderSet, comps: Components, source: int, grads: torch.Tensor, length: int
) -> list[tuple[int | torch.Tensor, torch.Tensor]]:
    """Per-position ``bmm`` against padded, activation-scaled decoder blocks."""
    batch, _, n_out, d_model = grads.shape
    out: list[tuple[int | torch.Tensor, torch.Tensor]] = []
    for block in comps.decoder_blocks(transcoders, source, length):
        if block.positions is not None:  # a group of positions (all < length)
            assert block.ids is not None
            m, n_max = block.rows.shape[:2]
            rows = block.rows[:, :, :n_out].reshape(m, n_max, n_out * d_model)
            g = grads.index_select(1, block.positions).permute(1, 2, 3, 0).reshape(m, n_out * d_model, batch)
            values = torch.bmm(rows, g)[block.pos, block.rank].T * block.activation  # [B, n]
            out.append((block.ids, values))
            continue
        p_end = min(block.p0 + block.rows.shape[0], length)
        n_in = comps.layer_slice(source, max_pos=p_end).stop - block.start
        if n_in == 0 or block.rows.shape[1] == 0:
            continue
        span = p_end - block.p0
        rows = block.rows[:span, :, :n_out].reshape(span, block.rows.shape[1], n_out * d_model)
        g = grads[:, block.p0 : p_end].permute(1, 2, 3, 0).reshape(span, n_out * d_model, batch)
        padded = torch.bmm(rows, g)  # [span, n_max, B]
        values = padded[block.pos[:n_in], block.rank[:n_in]].T * block.activation[:n_in]  # [B, n_in]
        out.append((block.start, values))
    return out


def _dense_edges(
    transcoders: TranscoderSet, comps: Components, source: int, grads: torch.Tensor, length: int
) -> list[tuple[int | torch.Tensor, torch.Tensor]]:
    """One ``g @ W_decᵀ`` GEMM per chunk of positions, then a gather of the active entries."""
    batch, _, n_out, d_model = grads.shape
    sl = comps.layer_slice(source, max_pos=length)
    if sl.stop == sl.start:
        return []
    d_tc = transcoders.d_transcoder
    n_all = len(transcoders.output_layers(source))
    w_dec = transcoders.full_decoder(source).reshape(d_tc, n_all, d_model)[:, :n_out]
    w_dec = w_dec.to(device=grads.device, dtype=torch.float32).reshape(d_tc, n_out * d_model)
    pos, feat, act = comps.pos[sl], comps.feature[sl], comps.activation[sl].float()
    step = max(1, DENSE_CHUNK_BYTES // (4 * batch * d_tc))
    out: list[tuple[int | torch.Tensor, torch.Tensor]] = []
    first = sl.start
    for p0 in range(0, length, step):
        p1 = min(length, p0 + step)
        # features sorted by position: those at [p0, p1) are one contiguous run (host offsets: no sync)
        lo = comps.layer_slice(source, max_pos=p0).stop - first
        hi = comps.layer_slice(source, max_pos=p1).stop - first
        if hi == lo:
            continue
        g = grads[:, p0:p1].reshape(batch * (p1 - p0), n_out * d_model)
        products = (g @ w_dec.T).reshape(batch, p1 - p0, d_tc)  # [B, span, d_tc]
        values = products[:, pos[lo:hi] - p0, feat[lo:hi]] * act[lo:hi]  # [B, n]
        out.append((first + lo, values))
    return out
