"""Attention, explained: head loadings of graph edges and QK attributions of attention scores.

- :func:`head_loadings`: each edge split into a direct part and per-(layer, head) parts (a path is
  credited to the last head it crosses); exact: the parts sum to the edge.
- :func:`qk_attribution`: a head's pre-softmax score at (query, key) as a sum over pairs of
  (query-side, key-side) sources plus constant terms; exact.
- :func:`store_loadings` / :func:`store_qk`: keep them in the graph file's optional section.

See docs/attention.md.
"""

from tracewire.attention.access import HeadGeometry, head_geometry
from tracewire.attention.loadings import HeadLoadings, head_loadings, target_loadings
from tracewire.attention.qk import QKAttribution, head_scores, qk_attribution
from tracewire.attention.sources import Sources, TraceContext
from tracewire.attention.store import store_loadings, store_qk, stored_loadings, stored_qk

__all__ = [
    "HeadGeometry",
    "HeadLoadings",
    "QKAttribution",
    "Sources",
    "TraceContext",
    "head_geometry",
    "head_loadings",
    "head_scores",
    "qk_attribution",
    "store_loadings",
    "store_qk",
    "stored_loadings",
    "stored_qk",
    "target_loadings",
]
