"""Planted transcoders: feature A (layer 1) -> feature B (layer 3) -> the target, on 8 of 10 prompts.

Each planted feature's encoder is solved for, by least squares on the tiny model's real transcoder
inputs, so that its pre-activation is exactly +SCALE at the last position of the prompts it should
fire on and -SCALE at every other non-BOS position of every prompt (30 positions, 32 dimensions:
the system is solvable exactly). With ReLU and no bias a planted feature therefore fires exactly
where it is planted; every other feature has a zero encoder and bias -1 and never fires.

- A (layer 1, id 2) and B (layer 3, id 1) fire on prompts 0-7; A's decoder points along B's
  encoder, B's decoder along the target's unembedding: the chain;
- C (layer 2, id 0) fires on prompts 0-3 only (influential there, but in 4 of 10 prompts);
- D (layer 0, id 3) fires on all 10 prompts but has a zero decoder: no influence at all.
"""

from __future__ import annotations

import torch

from tests.factories.models import tiny_model
from tracewire.dashboards.capture import layer_inputs
from tracewire.models.loading import LoadedModel
from tracewire.transcoders.base import LayerWeights, TranscoderConfig
from tracewire.transcoders.per_layer import PerLayerTranscoders

N_LAYERS, D_MODEL, D_TC = 4, 32, 4
SCALE = 4.0
TARGET = "Paris"
PROMPTS = [
    "The capital France",
    "capital of France",
    "France is France",
    "w20 w21 France",
    "w22 of France",
    "w23 w24 France",
    "The w25 France",
    "is w26 France",
    "The capital Texas",
    "w27 of Texas",
]
A, B, C, D = (1, 2), (3, 1), (2, 0), (0, 3)  # (layer, feature id)
FIRES_ON = {A: range(8), B: range(8), C: range(4), D: range(10)}


def planted_model() -> LoadedModel:
    return tiny_model("llama", n_layers=N_LAYERS, d_model=D_MODEL, seed=3)


@torch.no_grad()
def planted_transcoders(loaded: LoadedModel) -> PerLayerTranscoders:
    config = TranscoderConfig(
        kind="plt",
        model_name="tiny-planted",
        feature_input_hook="mlp.hook_in",
        feature_output_hook="mlp.hook_out",
        activation="relu",
        scan="tiny-planted-chain",
        n_layers=N_LAYERS,
        d_model=D_MODEL,
        d_transcoder=D_TC,
        has_skip=False,
    )
    inputs = _inputs(loaded, config.input_site)
    generator = torch.Generator().manual_seed(0)
    w_enc = torch.zeros(N_LAYERS, D_TC, D_MODEL)
    b_enc = torch.full((N_LAYERS, D_TC), -1.0)
    w_dec = torch.randn(N_LAYERS, D_TC, D_MODEL, generator=generator)
    for (layer, feature), prompts in FIRES_ON.items():
        w_enc[layer, feature] = _solve(inputs[layer], prompts)
        b_enc[layer, feature] = 0.0
    unembed = loaded.adapter.unembedding_matrix(loaded.model).float()  # [d, V]
    target_id = int(loaded.tokenizer.convert_tokens_to_ids(TARGET))
    w_dec[A] = 3.0 * w_enc[B] / w_enc[B].norm()
    w_dec[B] = 3.0 * unembed[:, target_id] / unembed[:, target_id].norm()
    w_dec[D] = 0.0
    layers = [
        LayerWeights(
            W_enc=w_enc[layer].contiguous(),
            b_enc=b_enc[layer],
            W_dec=w_dec[layer].contiguous(),
            b_dec=torch.zeros(D_MODEL),
        )
        for layer in range(N_LAYERS)
    ]
    return PerLayerTranscoders(config, layers)


def _inputs(loaded: LoadedModel, site: str) -> dict[int, torch.Tensor]:
    """Transcoder input ``[prompt, pos, d]`` per layer (all prompts have 3 words + BOS)."""
    ids = torch.stack([loaded.encode(prompt) for prompt in PROMPTS])
    assert ids.shape == (len(PROMPTS), 4), "every planted prompt must be BOS + 3 tokens"
    return {layer: x.double() for layer, x in layer_inputs(loaded, ids, site, range(N_LAYERS)).items()}


def _solve(x: torch.Tensor, prompts: range) -> torch.Tensor:
    """Encoder row with pre-activation +SCALE at the last position of ``prompts``, -SCALE elsewhere."""
    rows = x[:, 1:].reshape(-1, D_MODEL)
    wanted = torch.full((len(PROMPTS), 3), -SCALE, dtype=torch.float64)
    wanted[list(prompts), -1] = SCALE
    solution = torch.linalg.lstsq(rows, wanted.reshape(-1, 1), driver="gelsd").solution.squeeze(1)
    assert torch.allclose(rows @ solution, wanted.reshape(-1), atol=1e-6), (
        "the planted system is not solvable"
    )
    return solution.float()
