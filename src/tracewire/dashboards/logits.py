"""Top and bottom logits of a feature: what its decoder direction says through the unembedding.

A feature writes ``a · d`` into the residual stream (``d`` = its decoder row; for a CLT the row
into its own layer, the first of its output layers). Read directly by the unembedding, that
direction raises the logits ``W_Uᵀ N(d)``, where ``N`` is the final norm taken as linear: its gain
(``w`` for RMSNorm and LayerNorm, ``1 + w`` for Gemma's offset RMSNorm) and, for LayerNorm, the
mean-centring; the normalising scale is the same for every token and does not change the ranking.
This is the "logit lens" of the decoder direction, as in Anthropic's and Neuronpedia's dashboards
(which read ``W_dec · W_U`` with the norm gain folded into ``W_U``). Softcapping is monotonic and
left out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tracewire.models.loading import LoadedModel
from tracewire.transcoders.base import TranscoderSet


@torch.no_grad()
def readout_matrix(loaded: LoadedModel) -> Tensor:
    """``[d_model, vocab]``: the unembedding with the final norm's linear part folded in."""
    adapter, model = loaded.adapter, loaded.model
    w_u = adapter.unembedding_matrix(model).float()
    norm = adapter.final_norm_module(model)
    weight = getattr(norm, "weight", None)
    if isinstance(weight, Tensor):
        gain = weight.float() + 1.0 if adapter.norm_kind == "rms_offset" else weight.float()
        w_u = gain[:, None] * w_u
    if adapter.norm_kind == "layernorm":
        w_u = w_u - w_u.mean(dim=0, keepdim=True)
    return w_u


@torch.no_grad()
def decoder_logits(
    transcoders: TranscoderSet, layer: int, ids: Tensor, readout: Tensor, n: int, *, chunk: int = 512
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-``n`` and bottom-``n`` (token ids, values) of features ``ids`` of ``layer``: four ``[m, n]``.

    Bottom logits are listed most negative first.
    """
    n = min(n, readout.shape[1])
    top_i, top_v, bottom_i, bottom_v = [], [], [], []
    # In the transcoders' dtype: a bf16 build ranks logits with bf16 matmuls (fp32 accumulation).
    readout = readout.to(device=transcoders.device, dtype=transcoders.dtype)
    for start in range(0, ids.numel(), chunk):
        rows = transcoders.decoder_vectors(layer, ids[start : start + chunk])[:, 0, :]
        logits = rows @ readout
        top = logits.topk(n, dim=1)
        bottom = logits.topk(n, dim=1, largest=False)
        top_i.append(top.indices.cpu())
        top_v.append(top.values.float().cpu())
        bottom_i.append(bottom.indices.cpu())
        bottom_v.append(bottom.values.float().cpu())
    if not top_i:
        empty_i, empty_v = torch.zeros(0, n, dtype=torch.int64), torch.zeros(0, n)
        return empty_i, empty_v, empty_i, empty_v
    return torch.cat(top_i), torch.cat(top_v), torch.cat(bottom_i), torch.cat(bottom_v)
