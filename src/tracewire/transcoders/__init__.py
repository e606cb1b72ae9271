"""Transcoders: the sparse, interpretable stand-ins for a model's MLPs.

- ``PerLayerTranscoders`` (PLT, optionally with a linear skip) and ``CrossLayerTranscoder`` (CLT)
  share one API, defined by ``TranscoderSet``: ``encode`` / ``encode_sparse``,
  ``encoder_vectors`` / ``decoder_vectors``, ``skip`` and ``reconstruct``.
- ``load_transcoders`` / ``save_transcoders`` read and write the circuit-tracer layout (and read
  GemmaScope ``params.npz``), from a local directory or a hub reference.
- ``synthetic.random_plt`` / ``random_clt`` build tiny seeded sets for tests and examples.
"""

from __future__ import annotations

from tracewire.transcoders.activations import Activation, JumpReLU, ReLU, TopK, make_activation
from tracewire.transcoders.base import LayerWeights, TranscoderConfig, TranscoderSet
from tracewire.transcoders.cross_layer import CrossLayerTranscoder
from tracewire.transcoders.io import load_transcoders, save_transcoders
from tracewire.transcoders.per_layer import PerLayerTranscoders
from tracewire.transcoders.sites import input_hook, input_site, output_hook, output_site

__all__ = [
    "Activation",
    "CrossLayerTranscoder",
    "JumpReLU",
    "LayerWeights",
    "PerLayerTranscoders",
    "ReLU",
    "TopK",
    "TranscoderConfig",
    "TranscoderSet",
    "input_hook",
    "input_site",
    "load_transcoders",
    "make_activation",
    "output_hook",
    "output_site",
    "save_transcoders",
]
