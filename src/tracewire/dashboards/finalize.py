"""From a layer's accumulators to store records: histograms, percentiles, example groups, labels.

Definitions (also in ``docs/feature-store.md``):

- **firing**: activation > 0 at a non-BOS token. ``activation_count`` counts such tokens and
  ``activation_frequency = activation_count / n_tokens``.
- **histogram**: ``n_hist_bins`` equal-width bins over ``[act_min, act_max]`` (what the
  attribution-graph frontend draws). Each bin of the exact running histogram (see
  ``accumulators.RunningStats``) is assigned whole, by its centre, so the counts sum exactly to
  ``activation_count``; bin edges are accurate to one running bin (< 2 * act_max / n_fine_bins).
- **quantile_values**: the 1st, 2nd, ..., 100th percentile of the firing activations,
  interpolated linearly inside the running histogram's bins (same accuracy), clamped to
  ``[act_min, act_max]``; the 100th is ``act_max``. The frontend places a node's activation among
  these to print its percentile.
- **example groups**: group 0 holds the ``n_top`` highest activations. Then ``n_quantiles``
  groups split the firing activations at the percentiles ``100·i/n_quantiles`` (group
  ``Quantile 80–100%`` holds examples whose activation is in ``(p80, max]``, and so on down to
  ``[min, p20]``); each shows up to ``per_quantile`` examples drawn from a uniform reservoir sample
  of the firing events, so a group is a uniform sample of its activation range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from tracewire.dashboards.card import TOP_GROUP_NAME
from tracewire.dashboards.config import DashboardConfig
from tracewire.dashboards.labels import auto_label
from tracewire.dashboards.layer_job import LayerJob
from tracewire.dashboards.store import ExampleRows, FeatureRecord

#: ``fetch(window_indices) -> int array [len, seq_len]``: the token ids of corpus windows.
FetchWindows = Callable[[np.ndarray], np.ndarray]


def percentiles(hist: Tensor, scale: Tensor, lo: Tensor, hi: Tensor, fractions: Tensor) -> Tensor:
    """Values below which ``fractions`` of each row's histogram mass lies: ``[F, P]`` (float64).

    ``hist [F, B]`` counts equal bins of ``[0, scale)``; values are interpolated linearly inside
    a bin and clamped to ``[lo, hi]``. Rows with no counts give zeros.
    """
    n_bins = hist.shape[1]
    cum = hist.cumsum(1).double()
    count = cum[:, -1:]
    target = fractions.double()[None, :] * count
    j = torch.searchsorted(cum, target, side="left").clamp_(max=n_bins - 1)
    before = torch.where(j > 0, cum.gather(1, (j - 1).clamp(min=0)), torch.zeros_like(target))
    inside = hist.gather(1, j).double().clamp(min=1)
    width = scale.double()[:, None] / n_bins
    value = (j.double() + ((target - before) / inside).clamp(0, 1)) * width
    value = torch.minimum(torch.maximum(value, lo.double()[:, None]), hi.double()[:, None])
    return torch.where(count > 0, value, torch.zeros_like(value))


def display_histogram(hist: Tensor, scale: Tensor, lo: Tensor, hi: Tensor, n_out: int) -> Tensor:
    """Re-bin ``hist [F, B]`` over ``[0, scale)`` into ``n_out`` equal bins over ``[lo, hi]`` (exact)."""
    n_bins = hist.shape[1]
    centres = (torch.arange(n_bins, dtype=torch.float64) + 0.5) / n_bins * scale.double()[:, None]
    span = (hi - lo).double()[:, None]
    where = ((centres - lo.double()[:, None]) / span.clamp(min=1e-30) * n_out).floor()
    where = torch.where(span > 0, where, torch.zeros_like(where)).clamp_(0, n_out - 1).long()
    return torch.zeros(hist.shape[0], n_out, dtype=torch.int64).scatter_add_(1, where, hist)


def group_names(n_quantiles: int) -> list[str]:
    """Group names, top group first, then quantile groups from the highest."""
    names = [TOP_GROUP_NAME]
    for g in reversed(range(n_quantiles)):
        names.append(f"Quantile {100 * g / n_quantiles:g}–{100 * (g + 1) / n_quantiles:g}%")
    return names


def layer_records(
    job: LayerJob,
    config: DashboardConfig,
    n_tokens: int,
    logits: tuple[Tensor, Tensor, Tensor, Tensor],
    fetch_windows: FetchWindows,
    vocab: Sequence[str],
    *,
    chunk: int = 512,
) -> Iterator[list[FeatureRecord]]:
    """The records of ``job``'s features, ``chunk`` at a time (array work is per chunk, not per example)."""
    stats, n_q = job.stats, config.n_quantiles
    count, total = stats.count.cpu(), stats.total.cpu()
    lo = torch.where(count > 0, stats.min.cpu(), torch.zeros_like(stats.min.cpu()))
    hi = stats.max.cpu()
    hist, scale = stats.hist.cpu(), stats.scale.cpu()
    quantile_values = percentiles(hist, scale, lo, hi, torch.arange(1, 101) / 100).float().numpy()
    bounds = percentiles(hist, scale, lo, hi, torch.arange(1, n_q) / n_q).float()  # [F, n_q - 1]
    shown = display_histogram(hist, scale, lo, hi, config.n_hist_bins).numpy()
    t_score, t_value, t_pos, t_win = (t.cpu() for t in job.top.sorted())
    s_score, s_value, s_pos, s_win = (t.cpu() for t in job.sample.sorted())  # by key: a random order
    # Quantile group of each reservoir slot (0 = lowest) and its rank in key order within the group.
    s_valid = torch.isfinite(s_score)
    group = (s_value[:, :, None] > bounds[:, None, :]).sum(-1)  # [F, R]
    member = (group[:, :, None] == torch.arange(n_q)[None, None, :]) & s_valid[:, :, None]
    in_group = member.long().cumsum(1).gather(2, group[:, :, None]).squeeze(2)
    s_keep = (s_valid & (in_group <= config.per_quantile)).numpy()
    t_valid = torch.isfinite(t_score).numpy()
    group_np, bounds_np, lo_np, hi_np = group.numpy(), bounds.numpy(), lo.numpy(), hi.numpy()
    t_value_np, t_pos_np, t_win_np = t_value.numpy(), t_pos.numpy(), t_win.numpy()
    s_value_np, s_pos_np, s_win_np = s_value.numpy(), s_pos.numpy(), s_win.numpy()
    names = group_names(n_q)
    top_i, top_v, bottom_i, bottom_v = (t.numpy() for t in logits)
    seq, width, before = config.seq_len, config.window, config.context_before
    vocab_size = len(vocab)
    for begin in range(0, job.n, chunk):
        end = min(begin + chunk, job.n)
        # Every example of the chunk as one row of parallel arrays: top slots, then kept reservoir slots.
        tf, ts = np.nonzero(t_valid[begin:end])
        sf, ss = np.nonzero(s_keep[begin:end])
        s_grp = n_q - group_np[begin:end][sf, ss]  # quantile groups from the highest: 1 .. n_q
        feat = np.concatenate([tf, sf])
        grp = np.concatenate([np.zeros_like(tf), s_grp])
        value = np.concatenate([t_value_np[begin:end][tf, ts], s_value_np[begin:end][sf, ss]])
        position = np.concatenate([t_pos_np[begin:end][tf, ts], s_pos_np[begin:end][sf, ss]])
        acts = np.concatenate([t_win_np[begin:end][tf, ts], s_win_np[begin:end][sf, ss]]).reshape(-1, width)
        order = np.lexsort((-value, grp, feat))  # by feature, group, decreasing activation
        feat, grp, value, position, acts = feat[order], grp[order], value[order], position[order], acts[order]
        first = (
            np.r_[True, (feat[1:] != feat[:-1]) | (grp[1:] != grp[:-1])] if feat.size else np.zeros(0, bool)
        )
        run_start = np.maximum.accumulate(np.where(first, np.arange(feat.size), 0)) if feat.size else feat
        rank = np.arange(feat.size) - run_start
        window, p = np.divmod(position, seq)
        start = np.clip(p - before, 1, seq - width)
        windows = np.unique(window)
        fetched = fetch_windows(windows) if windows.size else np.zeros((0, seq), dtype=np.int64)
        rows = np.searchsorted(windows, window)
        token_ids = fetched[rows[:, None], start[:, None] + np.arange(width)[None, :]].astype(np.int32)
        center = p - start
        corpus_position = window * (seq - 1) + p - 1
        centre_token = token_ids[np.arange(feat.size), center] if feat.size else token_ids[:, 0]
        cut = np.searchsorted(feat, np.arange(end - begin + 1))
        records = []
        for i in range(end - begin):
            f = begin + i
            a, b = int(cut[i]), int(cut[i + 1])
            n_top = int(np.count_nonzero(grp[a:b] == 0))
            edges = [float(lo_np[f]), *bounds_np[f].tolist(), float(hi_np[f])]
            groups = [
                {
                    "name": names[0],
                    "lower": float(value[a + n_top - 1]) if n_top else 0.0,
                    "upper": float(hi_np[f]),
                }
            ]
            groups += [
                {"name": names[1 + j], "lower": edges[n_q - 1 - j], "upper": edges[n_q - j]}
                for j in range(n_q)
            ]
            label = auto_label(
                [vocab[t] if t < vocab_size else "" for t in centre_token[a : a + n_top].tolist()],
                value[a : a + n_top].tolist(),
                [vocab[t] if t < vocab_size else "" for t in top_i[f].tolist()],
                activation_count=int(count[f]),
                n_tokens=n_tokens,
            )
            records.append(
                FeatureRecord(
                    layer=job.layer,
                    feature=int(job.feature_ids[f]),
                    activation_count=int(count[f]),
                    n_tokens=n_tokens,
                    act_min=float(lo_np[f]),
                    act_max=float(hi_np[f]),
                    act_sum=float(total[f]),
                    histogram=shown[f],
                    quantile_values=quantile_values[f] if count[f] > 0 else np.zeros(0, np.float32),
                    groups=groups,
                    top_logit_ids=top_i[f],
                    top_logit_values=top_v[f],
                    bottom_logit_ids=bottom_i[f],
                    bottom_logit_values=bottom_v[f],
                    auto_label=label,
                    examples=ExampleRows(
                        grp=grp[a:b],
                        rank=rank[a:b],
                        position=corpus_position[a:b],
                        center=center[a:b],
                        activation=value[a:b],
                        token_ids=token_ids[a:b],
                        acts=acts[a:b],
                    ),
                )
            )
        yield records
