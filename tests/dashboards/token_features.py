"""A tiny model with transcoders whose feature k fires exactly on one known token, and a reference.

Construction: in a tiny Llama with large embeddings and scaled-down attention and MLP outputs, the
residual stream before each MLP (``resid_mid``) is the token's embedding plus a small,
context-dependent perturbation. Feature ``k`` of layer ``l`` reads ``resid_mid`` through the unit
vector of the embedding of its token ``TOKEN_OF[l][k]`` with a ReLU and a bias halfway between
that token's own projection and the largest projection of any other token, so it fires on that
token only, with an activation that varies a little with context. Its decoder is the unembedding
row of ``LOGIT_OF[l][k]`` divided by the final norm's gain, so that token is its top logit.

``reference_activations`` recomputes every feature's activation on the same corpus windows with
hooks and ``TranscoderSet.encode`` (not with the dashboards code), which the tests compare the
store against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tests.factories.models import VOCAB, tiny_model
from tracewire.models.loading import LoadedModel
from tracewire.transcoders.base import LayerWeights, TranscoderConfig
from tracewire.transcoders.per_layer import PerLayerTranscoders

N_LAYERS = 2
D_MODEL = 64
SHIFT = (0, 7)  # layer l's feature k fires on token (k + SHIFT[l]) % VOCAB: catches a mixed-up layer
TOKEN_OF = [[(k + SHIFT[layer]) % VOCAB for k in range(VOCAB)] for layer in range(N_LAYERS)]
LOGIT_OF = [[(k + 3 + layer) % VOCAB for k in range(VOCAB)] for layer in range(N_LAYERS)]


def token_model() -> LoadedModel:
    loaded = tiny_model("llama", n_layers=N_LAYERS, d_model=D_MODEL, seed=1)
    with torch.no_grad():
        loaded.adapter.embed_module(loaded.model).weight.mul_(10.0)
        for layer in range(N_LAYERS):
            block = loaded.adapter.layer(loaded.model, layer)
            block.self_attn.o_proj.weight.mul_(0.15)
            block.mlp.down_proj.weight.mul_(0.05)
    return loaded


@torch.no_grad()
def token_transcoders(loaded: LoadedModel) -> PerLayerTranscoders:
    embed = loaded.adapter.embed_module(loaded.model).weight.float()  # [V, d]
    unit = embed / embed.norm(dim=1, keepdim=True)
    gain = loaded.adapter.final_norm_module(loaded.model).weight.float()
    w_u = loaded.adapter.unembedding_matrix(loaded.model).float()  # [d, V]
    layers = []
    for layer in range(N_LAYERS):
        tokens = torch.tensor(TOKEN_OF[layer])
        w_enc = unit[tokens]  # [F, d]
        projections = w_enc @ embed.T  # [F, V]: feature k against every token's embedding
        own = projections.gather(1, tokens[:, None]).squeeze(1)
        others = projections.scatter(1, tokens[:, None], float("-inf")).max(dim=1).values
        assert bool((own - others > 4.0).all()), "embeddings too close for a clean construction"
        w_dec = (w_u[:, torch.tensor(LOGIT_OF[layer])].T / gain).contiguous()
        layers.append(
            LayerWeights(
                W_enc=w_enc.contiguous(),
                b_enc=-(own + others) / 2,
                W_dec=w_dec,
                b_dec=torch.zeros(D_MODEL),
            )
        )
    config = TranscoderConfig(
        kind="plt",
        model_name="tiny-token",
        feature_input_hook="hook_resid_mid",
        feature_output_hook="mlp.hook_out",
        activation="relu",
        scan="tiny-token-features",
        n_layers=N_LAYERS,
        d_model=D_MODEL,
        d_transcoder=VOCAB,
    )
    return PerLayerTranscoders(config, layers)


@torch.no_grad()
def reference_activations(loaded: LoadedModel, transcoders: PerLayerTranscoders, ids: Tensor) -> list[Tensor]:
    """Per layer, activations ``[n_windows, seq, VOCAB]`` of every feature (BOS positions zeroed)."""
    captured: dict[int, Tensor] = {}
    handles = []
    for layer in range(N_LAYERS):
        norm = loaded.adapter.layer(loaded.model, layer).post_attention_layernorm

        def grab(_module, args, layer=layer):  # type: ignore[no-untyped-def]
            captured[layer] = args[0].detach()

        handles.append(norm.register_forward_pre_hook(grab))
    try:
        loaded.model(ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for layer in range(N_LAYERS):
        acts = transcoders.encode(layer, captured[layer]).float()
        acts[:, 0] = 0
        out.append(acts)
    return out
