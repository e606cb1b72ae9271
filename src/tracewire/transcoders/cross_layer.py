"""Cross-layer transcoder (CLT): a feature read at layer ``i`` writes to every MLP output ``l ≥ i``.

This is the replacement of Ameisen et al. (2025): the reconstruction of MLP output ``l`` is
``Σ_{i ≤ l} W_dec^{i→l}ᵀ a_i + b_dec_l``. A feature that is amplified across several MLPs is then
one node instead of a chain of near-duplicates, which makes attribution graphs shorter.

Unlike circuit-tracer we keep an optional linear skip per output layer (``W_skip_l``, from the
input of layer ``l``): dropping it on load would silently change the reconstruction of sets
trained with one.
"""

from __future__ import annotations

from typing import ClassVar

from tracewire.transcoders.base import TranscoderSet


class CrossLayerTranscoder(TranscoderSet):
    """One encoder per layer; ``W_dec[i]`` is ``[d_transcoder, n_layers - i, d_model]`` (targets i..L-1)."""

    kind: ClassVar[str] = "clt"

    def output_layers(self, layer: int) -> range:
        """A CLT feature of layer ``layer`` writes to layers ``layer .. n_layers - 1``."""
        self._check_layer(layer)
        return range(layer, self.n_layers)

    def _decoder_dims(self, layer: int) -> tuple[tuple[int, ...], str]:
        return (self.n_layers - layer, self.d_model), f"[d_transcoder, n_layers - {layer}, d_model]"
