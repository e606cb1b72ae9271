"""Per-layer transcoders (PLT): one sparse replacement per MLP, optionally with a linear skip.

Feature ``f`` of layer ``l`` reads the MLP input of layer ``l`` and writes only to the MLP output
of the same layer: ``ŷ_l = W_dec_lᵀ a_l + b_dec_l (+ x_l @ W_skip_lᵀ)``. With ``W_skip`` this is
the *skip transcoder* of Paulo et al. (2025), whose un-penalised linear path absorbs the part of
the MLP that is linear and so leaves the features for what is not.
"""

from __future__ import annotations

from typing import ClassVar

from tracewire.transcoders.base import TranscoderSet


class PerLayerTranscoders(TranscoderSet):
    """One transcoder per layer; ``W_dec[l]`` is ``[d_transcoder, d_model]``."""

    kind: ClassVar[str] = "plt"

    def output_layers(self, layer: int) -> range:
        """A PLT feature writes to its own layer only."""
        self._check_layer(layer)
        return range(layer, layer + 1)

    def _decoder_dims(self, layer: int) -> tuple[tuple[int, ...], str]:
        return (self.d_model,), "[d_transcoder, d_model]"
