"""The tensor accumulators against brute force: exact histograms, top-k and reservoir slots."""

from __future__ import annotations

import pytest
import torch

from tracewire.dashboards.accumulators import RunningStats, SlotSet
from tracewire.dashboards.finalize import display_histogram, percentiles
from tracewire.dashboards.layer_job import reservoir_keys


def stream(n_features: int, n_batches: int, seed: int = 0):
    """Batches of (feat, value, position): activations whose scale grows, so histograms must grow."""
    g = torch.Generator().manual_seed(seed)
    position = 0
    for b in range(n_batches):
        m = int(torch.randint(0, 80, (), generator=g))
        feat = torch.randint(0, n_features, (m,), generator=g)
        value = torch.rand(m, generator=g) * (b + 1) ** 2 + 1e-3
        yield feat, value, torch.arange(position, position + m)
        position += m


def test_running_histogram_counts_are_exact_while_the_range_grows():
    n, bins = 6, 32
    stats = RunningStats(n, bins)
    seen: dict[int, list[float]] = {i: [] for i in range(n)}
    for feat, value, _ in stream(n, 40):
        stats.update(feat, value)
        for f, v in zip(feat.tolist(), value.tolist()):
            seen[f].append(v)
    for f in range(n):
        values = torch.tensor(seen[f])
        scale = float(stats.scale[f])
        assert values.max() < scale <= 2 * values.max()  # a power of two just above the maximum
        direct = torch.bincount((values / scale * bins).long(), minlength=bins)
        assert stats.hist[f].tolist() == direct.tolist()
        assert int(stats.count[f]) == len(values)
        assert float(stats.max[f]) == float(values.max()) and float(stats.min[f]) == float(values.min())


def test_display_histogram_and_percentiles_from_the_running_histogram():
    n, bins = 4, 256
    stats = RunningStats(n, bins)
    g = torch.Generator().manual_seed(1)
    values = [torch.rand(2000, generator=g) * (f + 1) + f for f in range(n)]
    for f in range(n):
        stats.update(torch.full((2000,), f), values[f])
    lo, hi = stats.min, stats.max
    shown = display_histogram(stats.hist, stats.scale, lo, hi, 10)
    assert shown.sum(1).tolist() == [2000] * n
    for f in range(n):
        exact = torch.histc(values[f], bins=10, min=float(lo[f]), max=float(hi[f]))
        assert (shown[f] - exact).abs().sum() <= 0.05 * 2000  # only bins' edges move, by < 1 fine bin
    p = percentiles(stats.hist, stats.scale, lo, hi, torch.tensor([0.1, 0.5, 0.9, 1.0]))
    for f in range(n):
        width = float(stats.scale[f]) / bins
        exact = torch.quantile(values[f].double(), torch.tensor([0.1, 0.5, 0.9, 1.0], dtype=torch.float64))
        assert torch.allclose(p[f], exact, atol=width)
        assert float(p[f, -1]) == float(hi[f])


def test_slots_keep_the_k_best_events_and_their_windows():
    n, k = 5, 4
    slots = SlotSet(n, k, 2)
    seen: dict[int, list[tuple[float, int]]] = {i: [] for i in range(n)}
    for feat, value, position in stream(n, 30, seed=2):
        value = value.round(decimals=1)  # many ties: broken by position
        local = torch.arange(feat.numel())
        slots.offer(feat, value, value, position, lambda rows, f: torch.stack([rows, f], 1).float(), local)
        seen_local = dict(zip(position.tolist(), local.tolist()))
        for f, v, p in zip(feat.tolist(), value.tolist(), position.tolist()):
            seen[f].append((v, p, seen_local[p]))  # type: ignore[arg-type]
    _, value, position, window = slots.sorted()
    for f in range(n):
        best = sorted(seen[f], key=lambda e: (-e[0], e[1]))[:k]
        assert value[f, : len(best)].tolist() == [v for v, _, _ in best]
        assert position[f, : len(best)].tolist() == [p for _, p, _ in best]
        assert window[f, : len(best)].tolist() == [[float(r), float(f)] for _, _, r in best]


def test_reservoir_keys_are_uniform_and_deterministic():
    position = torch.arange(200_000)
    keys = reservoir_keys(position, position % 7, layer=3, seed=0)
    assert torch.equal(keys, reservoir_keys(position, position % 7, layer=3, seed=0))
    assert float(keys.min()) >= 0 and float(keys.max()) < 1
    counts = torch.histc(keys.float(), bins=10, min=0, max=1)
    assert (counts - 20_000).abs().max() < 600  # ~4 sigma
    assert not torch.equal(keys, reservoir_keys(position, position % 7, layer=4, seed=0))
    assert not torch.equal(keys, reservoir_keys(position, position % 7, layer=3, seed=1))
    big = reservoir_keys(torch.tensor([2**40 + 5]), torch.tensor([10**6]), layer=60, seed=2**20)
    assert 0 <= float(big) < 1


@pytest.mark.parametrize("kind", ["activations", "reservoir_keys", "other"])
def test_one_sort_event_order_equals_two_stable_sorts(kind: str) -> None:
    """The single composite-key sort gives exactly the (feature, -score, event) order of two sorts."""
    from tracewire.dashboards.accumulators import _feature_major_order

    gen = torch.Generator().manual_seed(3)
    feat = torch.randint(0, 50, (5000,), generator=gen)
    if kind == "activations":  # float32 > 0, with ties
        score = torch.randint(1, 200, (5000,), generator=gen).float() / 7
    elif kind == "reservoir_keys":  # multiples of 2**-32 in [0, 1), with ties
        score = torch.randint(0, 2**32, (5000,), generator=gen).double() / 2.0**32
        score[::7] = score[3]
    else:  # negative scores: the two-sort fallback
        score = torch.randn(5000, generator=gen)
    reference = torch.argsort(score, descending=True, stable=True)
    reference = reference[torch.argsort(feat[reference], stable=True)]
    assert torch.equal(_feature_major_order(feat, score), reference)
