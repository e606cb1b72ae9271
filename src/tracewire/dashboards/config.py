"""``DashboardConfig``: the settings that shape every card of a build.

All of them are recorded in the store's ``build`` meta entry: two jobs may add cards to one store
only if they agree on these (and on model, transcoders and corpus sample), so that every card in a
store is comparable. Defaults follow Neuronpedia's dashboards (top activations, 5 activation
quantiles of 5 examples, 10 logits each way), with shorter windows for terminal display.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tracewire.errors import InvalidArgumentError


@dataclass(frozen=True)
class DashboardConfig:
    """How a build samples and summarises activations.

    - ``seq_len``: corpus window length (BOS included); statistics skip the BOS position.
    - ``n_top``: top-activating examples per feature.
    - ``n_quantiles`` x ``per_quantile``: examples per activation-quantile group; a uniform
      reservoir of ``oversample`` times that many firing events feeds the groups.
    - ``context_before`` / ``context_after``: tokens shown around an example's token.
    - ``n_hist_bins``: bins of the stored histogram; ``n_fine_bins``: bins of the running
      histogram it is made from (a power of two; more = finer percentiles, more memory).
    - ``n_logits``: top and bottom logits kept.
    - ``seed``: seeds the reservoir's keys (a hash of seed, layer, feature and token position,
      so the sample does not depend on batch size, feature subset or interruptions).
    """

    seq_len: int = 128
    n_top: int = 16
    n_quantiles: int = 5
    per_quantile: int = 5
    oversample: int = 2
    context_before: int = 15
    context_after: int = 8
    n_hist_bins: int = 64
    n_fine_bins: int = 256
    n_logits: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        positive = (
            "seq_len",
            "n_top",
            "n_quantiles",
            "per_quantile",
            "oversample",
            "n_hist_bins",
            "n_logits",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"DashboardConfig.{name} must be a positive integer, got {value!r}"
                )
        for name in ("context_before", "context_after", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"DashboardConfig.{name} must be an integer >= 0, got {value!r}")
        if self.n_fine_bins < 2 or self.n_fine_bins & (self.n_fine_bins - 1):
            raise InvalidArgumentError(
                f"DashboardConfig.n_fine_bins must be a power of two >= 2, got {self.n_fine_bins}"
            )
        if self.window > self.seq_len - 1:
            raise InvalidArgumentError(
                f"DashboardConfig: an example window of {self.window} tokens (context_before + 1 + "
                f"context_after) does not fit in seq_len - 1 = {self.seq_len - 1} tokens after the BOS"
            )

    @property
    def window(self) -> int:
        """Tokens per example window."""
        return self.context_before + 1 + self.context_after

    @property
    def reservoir(self) -> int:
        """Firing events sampled per feature for the quantile groups."""
        return self.n_quantiles * self.per_quantile * self.oversample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
