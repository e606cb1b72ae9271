"""One model forward that yields the transcoder input of every needed layer, and stops there.

The capture (``tracewire.models.hooks.capture_sites``) stops the forward at the deepest needed
layer's site, so the layers above it, the final norm and the unembedding (for SmolLM2 the largest
single matmul) never run.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tracewire.models.hooks import capture_sites
from tracewire.models.loading import LoadedModel


def layer_inputs(loaded: LoadedModel, ids: Tensor, site: str, layers: Sequence[int]) -> dict[int, Tensor]:
    """Transcoder inputs ``{layer: [batch, seq, d_model]}`` at ``site`` for token ids ``ids [batch, seq]``."""
    return capture_sites(loaded, ids, site, layers=layers).inputs
