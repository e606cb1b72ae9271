"""Cumulative-fraction thresholds without sorting every score.

Reference definition (circuit-tracer's ``find_threshold``): sort the scores descending, take
``cum = cumsum / sum``, and return the sorted score at ``searchsorted(cum, fraction)`` (the last,
smallest one if the fraction is never reached). Keeping ``scores >= threshold`` keeps the
smallest top set covering ``fraction`` of the total.

Edge scores can number in the tens of millions, so a full sort is the last resort:

1. up to 65,536 scores: sort them (cheapest);
2. the top ``k`` by ``torch.topk``, ``k`` growing eightfold up to 1/64 of all scores, while the
   cover is small: a sorted prefix is the prefix of the sort, so the answer is exact;
3. otherwise a histogram of ``log(score)`` in 4,096 buckets with the score mass of each: the
   bucket where the cumulative mass from the top crosses the goal holds the threshold, the mass
   above it is one sum, and only that bucket is sorted (refined again if still large);
4. a full sort only if the goal is never reached (``fraction`` ≈ 1 with rounding) or the sums of
   step 3 disagree with the bucket's own at the last digit.

``fraction >= 1`` returns the smallest positive score (what the definition gives in exact
arithmetic), so a threshold of 1 keeps every score that carries any mass. So does a fraction just
below 1 that the rounded cumulative sum never reaches: the reference would return its last,
smallest score there (0 when there are zeros) and keep everything, more than a threshold of 1
keeps, which breaks monotonicity in the fraction.

Sums are accumulated in float64 whatever the scores' dtype, so long float32 cumulative sums do not
drift; on float64 input the result is the reference's exactly.
"""

from __future__ import annotations

import torch

_SORT_LIMIT = 1 << 16
_FIRST_CANDIDATES = 4096
_TOPK_SHARE = 1 / 64
_BUCKETS = 4096
_REFINEMENTS = 4


def find_threshold(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Smallest score among the top scores that together cover ``fraction`` of the total.

    Scores must be non-negative. Returns a 0-d tensor of the scores' dtype; 0 for no scores.
    """
    flat = scores.detach().flatten()
    if flat.numel() == 0:
        return torch.zeros((), dtype=scores.dtype)
    total = float(flat.sum(dtype=torch.float64))
    if not total > 0:
        return flat.min()
    if fraction >= 1.0:
        # In exact arithmetic the cover first reaches 1 at the smallest positive score; say so
        # directly instead of letting the last bits of a long sum decide.
        return flat[flat > 0].min()
    if flat.numel() > _SORT_LIMIT:
        candidates = _FIRST_CANDIDATES
        while candidates <= flat.numel() * _TOPK_SHARE:
            found = _pick(torch.topk(flat, candidates, sorted=True).values, 0.0, total, fraction)
            if found is not None:
                return found
            candidates *= 8
        found = _pick_by_histogram(flat, total, fraction)
        if found is not None:
            return found
    ranked = torch.sort(flat, descending=True).values
    found = _pick(ranked, 0.0, total, fraction)
    return found if found is not None else ranked[ranked > 0][-1]


def _pick(ranked: torch.Tensor, mass_above: float, total: float, fraction: float) -> torch.Tensor | None:
    """First of ``ranked`` (descending, after ``mass_above``) where the cover reaches ``fraction``."""
    cumulative = (mass_above + torch.cumsum(ranked, dim=0, dtype=torch.float64)) / total
    position = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=torch.float64)))
    return ranked[position] if position < ranked.numel() else None


def _pick_by_histogram(flat: torch.Tensor, total: float, fraction: float) -> torch.Tensor | None:
    """Step 3 of the module docstring; None when a full sort must decide."""
    values = flat[flat > 0]
    mass_above = 0.0
    for _ in range(_REFINEMENTS):
        if values.numel() <= _SORT_LIMIT:
            break
        logs = torch.log(values.double())
        low, high = float(logs.min()), float(logs.max())
        if low == high:
            break
        edges = torch.linspace(low, high, _BUCKETS + 1, dtype=torch.float64)[1:-1]
        bucket = torch.bucketize(logs, edges, right=True)  # larger score, higher bucket
        mass = torch.zeros(_BUCKETS, dtype=torch.float64).index_add_(0, bucket, values.double())
        at_or_above = torch.flip(torch.cumsum(torch.flip(mass, [0]), 0), [0])
        reached = torch.nonzero(mass_above + at_or_above >= fraction * total).flatten()
        if reached.numel() == 0:
            return None
        chosen = int(reached.max())
        mass_above += float(at_or_above[chosen] - mass[chosen])
        values = values[bucket == chosen]
    if mass_above / total >= fraction:  # rounding put the crossing above this bucket
        return None
    return _pick(torch.sort(values, descending=True).values, mass_above, total, fraction)
