"""Training and evaluating transcoders (PLT, skip-PLT, CLT) on a model's own activations.

- ``TrainConfig`` / ``fast_default_config`` / ``quality_config``: the knobs and the named recipes;
- ``ModelActivations`` (+ ``CachedActivations``): every layer's (MLP input, MLP output) from one
  forward over ``TokenCorpus`` windows;
- ``train_on_corpus``: model -> (default corpus, built if missing) -> trained set, the demo's entry;
- ``train_transcoders``: the loop (losses, Adam, clipping, atomic checkpoints, exact resume, DDP),
  writing a set ``tracewire.transcoders.load_transcoders`` reads;
- ``evaluate_transcoders``: per-layer NMSE / L0 / dead fraction and the spliced replacement model.
"""

from __future__ import annotations

from tracewire.training.activations import ActivationSource, CachedActivations, ModelActivations
from tracewire.training.config import TrainConfig, fast_default_config, quality_config
from tracewire.training.module import TrainableTranscoders
from tracewire.training.recipes import ensure_corpus, train_fast_default, train_on_corpus
from tracewire.training.trainer import TrainResult, train_transcoders

__all__ = [
    "ActivationSource",
    "CachedActivations",
    "ModelActivations",
    "TrainConfig",
    "TrainResult",
    "TrainableTranscoders",
    "ensure_corpus",
    "fast_default_config",
    "quality_config",
    "train_fast_default",
    "train_on_corpus",
    "train_transcoders",
]
