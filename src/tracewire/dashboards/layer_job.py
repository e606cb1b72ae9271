"""The per-layer hot path of a build: encode the selected features, then update their statistics.

For one batch of corpus windows and one layer, :meth:`LayerJob.process` makes the dense
activations ``[batch * seq, n_selected]`` in one matmul (only the selected encoder rows; TopK
transcoders need all rows to know which features win), zeroes the BOS position, extracts the
firing events with one ``nonzero`` and hands them to the accumulators. There is no Python loop
over features or tokens.

Reservoir keys are a hash of (seed, layer, feature id, token position): the same event always
gets the same key, so the sample does not depend on how the corpus was batched, which features
were built together, or where a build was interrupted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tracewire.dashboards.accumulators import RunningStats, SlotSet
from tracewire.dashboards.config import DashboardConfig
from tracewire.errors import InvalidArgumentError
from tracewire.transcoders.base import TranscoderSet

_MASK32 = 0xFFFFFFFF


def reservoir_keys(position: Tensor, feature: Tensor, layer: int, seed: int) -> Tensor:
    """Uniform keys in [0, 1) (float64), a deterministic function of (seed, layer, feature, position).

    A 32-bit xor-shift-multiply hash of a linear mix of the inputs. Every multiplier is below
    2**31 and every operand is first cut to 32 bits, so no product overflows int64.
    """
    x = (position & _MASK32) * 0x2545F491 + (position >> 32) * 0x5851F42D
    x = x + (feature & _MASK32) * 0x27D4EB2F + (layer * 0x165667B1 + seed * 0x61C88647)
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK32
    x = x ^ (x >> 16)
    return x.double() / 2.0**32


class LayerJob:
    """Encoder, running statistics and example slots of the selected features of one layer."""

    def __init__(
        self, transcoders: TranscoderSet, layer: int, feature_ids: Tensor, config: DashboardConfig
    ) -> None:
        self.layer, self.config = layer, config
        device = transcoders.device
        self.feature_ids = feature_ids.to(torch.int64).cpu()
        n = int(self.feature_ids.numel())
        self.n = n
        self._ts = transcoders
        self._ids_device = self.feature_ids.to(device)
        self._topk = transcoders.activation_name == "topk"
        self._whole = n == transcoders.d_transcoder and bool(
            torch.equal(self.feature_ids, torch.arange(n, dtype=torch.int64))
        )
        if not self._topk:
            w, b = transcoders.W_enc[layer], transcoders.b_enc[layer]
            self._w = w if self._whole else w[self._ids_device].contiguous()
            self._b = b if self._whole else b[self._ids_device].contiguous()
            threshold = transcoders.threshold(layer)
            self._threshold = (
                None
                if threshold is None
                else (threshold if self._whole else threshold[self._ids_device].contiguous())
            )
        self.stats = RunningStats(n, config.n_fine_bins, device=device)
        self.top = SlotSet(n, config.n_top, config.window, device=device)
        self.sample = SlotSet(n, config.reservoir, config.window, device=device, score_dtype=torch.float64)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Activations ``[N, n_selected]`` of the selected features for ``x [N, d_model]``, in the
        transcoders' dtype (the few values kept are converted to float32 by the caller)."""
        if self._topk:
            acts = self._ts.encode(self.layer, x)
            acts = acts if self._whole else acts[:, self._ids_device]
        else:
            acts = F.linear(x, self._w, self._b)
            if self._threshold is None:
                acts.relu_()
            else:
                acts.masked_fill_(acts <= self._threshold, 0)
        return acts

    @torch.no_grad()
    def process(self, x: Tensor, first_position: int) -> int:
        """Update statistics and examples with inputs ``x [batch, seq, d_model]``; returns the firing events.

        The token at (row ``b``, position ``p``) of the batch has global position
        ``first_position + b * seq + p``.
        """
        batch, seq, _ = x.shape
        acts = self.encode(x.reshape(batch * seq, -1))
        acts.view(batch, seq, -1)[:, 0] = 0  # the BOS: an attention sink, never explained
        flat = acts.view(-1)
        where = (flat > 0).nonzero().squeeze(1)
        value = flat.index_select(0, where).float()
        local, feat = where // self.n, where % self.n
        self.stats.update(feat, value)
        position = local + first_position
        width, before = self.config.window, self.config.context_before
        offsets = torch.arange(width, device=acts.device) * self.n

        def window_of(rows: Tensor, features: Tensor) -> Tensor:
            p = rows % seq
            start = (p - before).clamp(min=1, max=seq - width)
            return flat.take(((rows - p + start) * self.n + features)[:, None] + offsets).float()

        self.top.offer(feat, value, value, position, window_of, local)
        keys = reservoir_keys(position, self._ids_device[feat], self.layer, self.config.seed)
        self.sample.offer(feat, keys, value, position, window_of, local)
        return int(feat.numel())

    # ----------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Tensor]:
        prefix = f"layer{self.layer}."
        state = {f"{prefix}feature_ids": self.feature_ids}
        state.update(self.stats.state_dict(prefix + "stats."))
        state.update(self.top.state_dict(prefix + "top."))
        state.update(self.sample.state_dict(prefix + "sample."))
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        prefix = f"layer{self.layer}."
        if not torch.equal(state[f"{prefix}feature_ids"], self.feature_ids):
            raise InvalidArgumentError(f"checkpoint holds other features for layer {self.layer}")
        self.stats.load_state_dict(state, prefix + "stats.")
        self.top.load_state_dict(state, prefix + "top.")
        self.sample.load_state_dict(state, prefix + "sample.")
