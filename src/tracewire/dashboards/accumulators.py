"""Per-feature running statistics over a stream of activations, updated with tensor ops only.

The build sees, for each batch and layer, the *firing events* of the selected features: parallel
tensors ``feat`` (row of the feature in the layer's selection), ``value`` (> 0) and the event's
token. Everything here consumes such event lists without a Python loop over features:

- :class:`RunningStats`: firing count, sum, min, max and an exact-count histogram whose range
  adapts. Bins are ``n_bins`` equal slices of ``[0, scale)`` where ``scale`` is a power of two
  above the largest activation seen; when a larger activation arrives, ``scale`` doubles ``g``
  times and bin ``j`` merges into bin ``j >> g`` (pairs of bins add up, so counts stay exact). At
  the end ``scale`` is below twice the maximum, so the histogram resolves the activation range
  into at least ``n_bins / 2`` bins. Display histograms and percentiles are derived from it.
- :class:`SlotSet`: for each feature, the ``k`` events with the largest *score*, plus their token
  windows. With ``score = activation`` it keeps the top-``k`` activating examples; with a uniform
  random score it is a reservoir sample (a "bottom-k sketch": the ``k`` largest of i.i.d. uniform
  keys are a uniform sample without replacement, and two such samples merge by keeping the ``k``
  largest keys again). A batch is merged in by one filter against each feature's current ``k``-th
  score (after the first batches almost every event fails it), a sort of the survivors by
  (feature, score) and one batched ``topk`` over ``[current | candidates]`` of the touched rows.

Both are plain tensors (``state_dict`` / ``load_state_dict``) so a build can checkpoint them
exactly and resume bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tracewire.errors import InvalidArgumentError

WindowFn = Callable[[Tensor, Tensor], Tensor]
_LAST = torch.iinfo(torch.int64).max  # sorts after every real position


class RunningStats:
    """Count, sum, min, max and adaptive histogram of each of ``n`` features' firing activations."""

    def __init__(self, n: int, n_bins: int = 256, device: torch.device | str = "cpu") -> None:
        if n_bins < 2 or n_bins & (n_bins - 1):
            raise InvalidArgumentError(f"n_bins must be a power of two >= 2, got {n_bins}")
        self.n, self.n_bins = n, n_bins
        self.count = torch.zeros(n, dtype=torch.int64, device=device)
        self.total = torch.zeros(n, dtype=torch.float64, device=device)
        self.min = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
        self.max = torch.zeros(n, dtype=torch.float32, device=device)
        self.scale = torch.zeros(n, dtype=torch.float32, device=device)  # 0: nothing seen yet
        self.hist = torch.zeros(n, n_bins, dtype=torch.int64, device=device)

    def update(self, feat: Tensor, value: Tensor) -> None:
        """Add firing events (``value > 0``) of features ``feat``."""
        if feat.numel() == 0:
            return
        self.count += torch.bincount(feat, minlength=self.n)
        self.total.index_add_(0, feat, value.double())
        self.min.scatter_reduce_(0, feat, value, reduce="amin")
        batch_max = torch.zeros_like(self.max).scatter_reduce_(0, feat, value, reduce="amax")
        self.max = torch.maximum(self.max, batch_max)
        self._grow(batch_max)
        scale = self.scale[feat]
        bins = (value / scale * self.n_bins).long().clamp_(0, self.n_bins - 1)
        self.hist.view(-1).index_add_(0, feat * self.n_bins + bins, torch.ones_like(bins))

    def _grow(self, batch_max: Tensor) -> None:
        """Raise ``scale`` to a power of two strictly above ``batch_max``, merging bins as it doubles."""
        need = batch_max >= self.scale
        if not bool(need.any()):
            return
        rows = need.nonzero().squeeze(1)
        _, exponent = torch.frexp(batch_max[rows])  # batch_max = m * 2**e with 0.5 <= m < 1
        new_scale = torch.ldexp(torch.ones_like(batch_max[rows]), exponent)  # 2**e > batch_max
        old_scale = self.scale[rows]
        _, new_exp = torch.frexp(new_scale)
        _, old_exp = torch.frexp(torch.where(old_scale == 0, new_scale, old_scale))
        shift = (new_exp - old_exp).clamp_(min=0, max=62).long()  # 2**shift = new / old
        old = self.hist[rows]
        target = torch.arange(self.n_bins, device=old.device)[None, :] >> shift[:, None]
        merged = torch.zeros_like(old).scatter_add_(1, target, old)
        self.hist[rows] = merged
        self.scale[rows] = new_scale

    def state_dict(self, prefix: str) -> dict[str, Tensor]:
        return {
            f"{prefix}{name}": getattr(self, name)
            for name in ("count", "total", "min", "max", "scale", "hist")
        }

    def load_state_dict(self, state: dict[str, Tensor], prefix: str) -> None:
        _load_checked(self, state, prefix, ("count", "total", "min", "max", "scale", "hist"))


class SlotSet:
    """For each of ``n`` features, the ``k`` events of largest score, with their token windows.

    Per feature and slot: ``score`` (``-inf`` = empty), ``value`` (activation at the event),
    ``position`` (global token index of the event) and ``window`` (the feature's activations on
    the ``width`` tokens around it). Slots are unordered (``sorted()`` orders them): a merge only
    writes the slots whose entry is replaced, so its cost follows the number of accepted events,
    not ``n * k * width``.
    """

    def __init__(
        self,
        n: int,
        k: int,
        width: int,
        device: torch.device | str = "cpu",
        score_dtype: torch.dtype = torch.float32,
    ) -> None:
        if k < 1 or width < 1:
            raise InvalidArgumentError(f"SlotSet needs k >= 1 and width >= 1, got k={k}, width={width}")
        self.n, self.k, self.width = n, k, width
        self.score = torch.full((n, k), float("-inf"), dtype=score_dtype, device=device)
        self.value = torch.zeros(n, k, dtype=torch.float32, device=device)
        self.position = torch.full((n, k), -1, dtype=torch.int64, device=device)
        self.window = torch.zeros(n, k, width, dtype=torch.float32, device=device)
        self.floor = torch.full((n,), float("-inf"), dtype=score_dtype, device=device)  # min score per row

    def offer(
        self, feat: Tensor, score: Tensor, value: Tensor, position: Tensor, window_of: WindowFn, local: Tensor
    ) -> None:
        """Merge candidate events in; ``window_of(local[i], feat[i])`` gives the windows ``[m, width]``
        of the events that win a slot.

        ``local`` is each event's row in the current batch (what ``window_of`` needs to gather the
        window); ``position`` is its global token index (what is kept).
        """
        if feat.numel() == 0:
            return
        score = score.to(self.score.dtype)
        accepted = (score > self.floor[feat]).nonzero().squeeze(1)
        if accepted.numel() == 0:
            return
        feat, score, value, position, local = (
            t.index_select(0, accepted) for t in (feat, score, value, position, local)
        )
        order = _feature_major_order(feat, score)
        feat, score, value, position, local = (
            t.index_select(0, order) for t in (feat, score, value, position, local)
        )
        rows, run = torch.unique_consecutive(feat, return_counts=True)
        starts = torch.cumsum(run, 0) - run
        device, u, k = feat.device, rows.numel(), self.k
        rank = torch.arange(feat.numel(), device=device) - torch.repeat_interleave(starts, run)
        row_of = torch.repeat_interleave(torch.arange(u, device=device), run)
        sel = (rank < k).nonzero().squeeze(1)
        cand_score = torch.full((u, k), float("-inf"), dtype=self.score.dtype, device=device)
        cand_event = torch.zeros(u, k, dtype=torch.int64, device=device)
        cand_score[row_of[sel], rank[sel]] = score[sel]
        cand_event[row_of[sel], rank[sel]] = sel
        # The k best of [current | candidates] by (score descending, position ascending): a total
        # order, so which of two equal scores is kept never depends on how the stream was batched.
        merged = torch.cat([self.score[rows], cand_score], dim=1)  # [u, 2k]
        cand_position = torch.where(torch.isfinite(cand_score), position[cand_event], _LAST)
        merged_position = torch.cat(
            [self.position[rows].masked_fill(self.position[rows] < 0, _LAST), cand_position], dim=1
        )
        by_position = torch.argsort(merged_position, dim=1, stable=True)
        by_score = torch.argsort(merged.gather(1, by_position), dim=1, descending=True, stable=True)
        chosen = by_position.gather(1, by_score)[:, :k]
        kept = torch.zeros_like(merged, dtype=torch.bool).scatter_(1, chosen, True)
        evicted = ~kept[:, :k]  # current slots to overwrite ...
        incoming = kept[:, k:] & torch.isfinite(cand_score)  # ... by these candidates, matched in rank order
        ev_row, ev_slot = evicted.nonzero(as_tuple=True)
        ev_rank = (evicted.long().cumsum(1) - 1)[ev_row, ev_slot]
        slot_of_rank = torch.zeros(u, k, dtype=torch.int64, device=device)
        slot_of_rank[ev_row, ev_rank] = ev_slot
        in_row, in_col = incoming.nonzero(as_tuple=True)
        in_rank = (incoming.long().cumsum(1) - 1)[in_row, in_col]
        target_row, target_slot = rows[in_row], slot_of_rank[in_row, in_rank]
        event = cand_event[in_row, in_col]
        self.score[target_row, target_slot] = score[event]
        self.value[target_row, target_slot] = value[event]
        self.position[target_row, target_slot] = position[event]
        self.window[target_row, target_slot] = window_of(local[event], feat[event]).to(self.window.dtype)
        self.floor[rows] = self.score[rows].min(dim=1).values

    def sorted(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(score, value, position, window), each row's slots by decreasing score, then increasing
        position (empty slots last)."""
        by_position = torch.argsort(self.position.masked_fill(self.position < 0, _LAST), dim=1, stable=True)
        by_score = torch.argsort(self.score.gather(1, by_position), dim=1, descending=True, stable=True)
        order = by_position.gather(1, by_score)
        window = self.window.gather(1, order[:, :, None].expand(-1, -1, self.width))
        return (
            self.score.gather(1, order),
            self.value.gather(1, order),
            self.position.gather(1, order),
            window,
        )

    def state_dict(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}{name}": getattr(self, name) for name in ("score", "value", "position", "window")}

    def load_state_dict(self, state: dict[str, Tensor], prefix: str) -> None:
        _load_checked(self, state, prefix, ("score", "value", "position", "window"))
        self.floor = self.score.min(dim=1).values


def _feature_major_order(feat: Tensor, score: Tensor) -> Tensor:
    """Event order by (feature ascending, score descending); ties keep event order (position order).

    One stable sort of an int64 key ``feat · 2³² + descending-rank(score)`` where the score maps
    exactly and monotonically to 32 bits — positive float32 activations (their bit patterns, as
    integers, order like the floats) and the reservoir's keys (multiples of 2⁻³² in [0, 1)) —
    instead of two stable sorts; other scores take the two sorts. Both give the same order.
    """
    if feat.numel() and int(feat.max()) < 2**30:
        bits: Tensor | None = None
        if score.dtype == torch.float32 and bool((score > 0).all()):
            bits = score.view(torch.int32).long()  # < 2**31, monotone for positive floats
        elif score.dtype == torch.float64 and bool(((score >= 0) & (score < 1)).all()):
            scaled = score * 2.0**32
            if bool((scaled == scaled.floor()).all()):
                bits = scaled.long()  # < 2**32
        if bits is not None:
            return torch.argsort(feat * 2**32 + (2**32 - 1 - bits), stable=True)
    order = torch.argsort(score, descending=True, stable=True)
    return order[torch.argsort(feat[order], stable=True)]


def _load_checked(owner: object, state: dict[str, Tensor], prefix: str, names: tuple[str, ...]) -> None:
    """Replace ``owner``'s tensors ``names`` by the checkpoint's, refusing any shape/dtype change."""
    for name in names:
        current = getattr(owner, name)
        loaded = state[f"{prefix}{name}"]
        if loaded.shape != current.shape or loaded.dtype != current.dtype:
            raise InvalidArgumentError(
                f"checkpoint tensor {prefix}{name}: {tuple(loaded.shape)} {loaded.dtype}, "
                f"expected {tuple(current.shape)} {current.dtype}"
            )
        setattr(owner, name, loaded.to(current.device).clone())
