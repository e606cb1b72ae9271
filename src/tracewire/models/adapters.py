"""The adapter table: everything tracewire knows about each architecture, in one place.

tracewire reaches Hugging Face modules directly (no TransformerLens, no nnsight), and only through
``tracewire.models.hooks``, which reads these rows. What differs between architectures is only
*where* things live: which module is the MLP, which norms sit
around it and how they scale, where the embedding and unembedding are, whether logits are
soft-capped. One frozen dataclass row per architecture says exactly that, and every other
layer of tracewire (linearisation, attribution, interventions, training) reads these rows
instead of special-casing model names.

Sites (the vocabulary shared with transcoder configs, see ``tracewire.transcoders.sites``):

- ``resid_mid``: the residual stream between attention and MLP = the *input* of the pre-MLP norm
  (TransformerLens ``hook_resid_mid``);
- ``mlp_in``: the *input* of the MLP module, i.e. the normalised residual (``mlp.hook_in``,
  ``ln2.hook_normalized``);
- ``mlp_out``: the *output* of the MLP module (``mlp.hook_out``);
- ``mlp_block_out``: what the MLP block adds to the residual stream: the output of the post-MLP
  norm where the architecture has one (Gemma-2/3), else the MLP output (``hook_mlp_out``).

Where attention patterns are frozen: always at the attention *function*, which tracewire swaps
for its own registered implementation (``transformers.AttentionInterface``) for the duration of a
frozen run; so a row only needs the attention module's name (for its ``layer_idx``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from tracewire.errors import InvalidArgumentError, UnsupportedArchitectureError

NormKind = Literal["rms", "rms_offset", "layernorm"]
SITES = ("resid_mid", "mlp_in", "mlp_out", "mlp_block_out")


@dataclass(frozen=True)
class Adapter:
    """One architecture's layout. Module paths are attribute paths (``a.b.c``)."""

    name: str
    model_types: tuple[str, ...]
    layers: str
    embed: str
    final_norm: str
    unembed: str
    attn: str
    mlp: str
    norm_kind: NormKind
    # Norms inside a decoder layer, by role; None where the architecture has none.
    pre_attn_norm: str
    pre_mlp_norm: str
    post_attn_norm: str | None = None
    post_mlp_norm: str | None = None
    # Config attributes (None: the architecture has no such feature).
    logit_softcap_attr: str | None = None
    attn_softcap_attr: str | None = None
    # Inside the attention module: the output projection (reads the concatenated head outputs)
    # and, where q, k and v come from one fused projection (GPT-2's Conv1D), its name.
    attn_out_proj: str = "o_proj"
    attn_fused_qkv: str | None = None
    # Extra notes for humans (docs / `tracewire models`).
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    # -- module access -------------------------------------------------------------------------
    def layer_modules(self, model: nn.Module) -> nn.ModuleList:
        layers = _get(model, self.layers)
        assert isinstance(layers, nn.ModuleList)
        return layers

    def n_layers(self, model: nn.Module) -> int:
        return len(self.layer_modules(model))

    def layer(self, model: nn.Module, index: int) -> nn.Module:
        return self.layer_modules(model)[index]

    def embed_module(self, model: nn.Module) -> nn.Module:
        return _get(model, self.embed)

    def final_norm_module(self, model: nn.Module) -> nn.Module:
        return _get(model, self.final_norm)

    def unembed_module(self, model: nn.Module) -> nn.Module:
        return _get(model, self.unembed)

    def mlp_module(self, model: nn.Module, index: int) -> nn.Module:
        return _get(self.layer(model, index), self.mlp)

    def attn_module(self, model: nn.Module, index: int) -> nn.Module:
        """The attention module of decoder layer ``index`` (read by ``tracewire.attention``)."""
        return _get(self.layer(model, index), self.attn)

    def norm_modules(self, model: nn.Module, index: int) -> dict[str, nn.Module]:
        """The norms of decoder layer ``index`` by role (only those the architecture has)."""
        layer = self.layer(model, index)
        roles = {
            "pre_attn": self.pre_attn_norm,
            "post_attn": self.post_attn_norm,
            "pre_mlp": self.pre_mlp_norm,
            "post_mlp": self.post_mlp_norm,
        }
        return {role: _get(layer, path) for role, path in roles.items() if path is not None}

    def site_module(
        self, model: nn.Module, index: int, site: str
    ) -> tuple[nn.Module, Literal["input", "output"]]:
        """The module whose input or output *is* ``site`` at layer ``index``."""
        layer = self.layer(model, index)
        if site == "resid_mid":
            return _get(layer, self.pre_mlp_norm), "input"
        if site == "mlp_in":
            return _get(layer, self.mlp), "input"
        if site == "mlp_out":
            return _get(layer, self.mlp), "output"
        if site == "mlp_block_out":
            if self.post_mlp_norm is not None:
                return _get(layer, self.post_mlp_norm), "output"
            return _get(layer, self.mlp), "output"
        raise InvalidArgumentError(f"unknown site {site!r}; expected one of {SITES}")

    # -- numbers ---------------------------------------------------------------------------------
    def logit_softcap(self, config: object) -> float | None:
        if self.logit_softcap_attr is None:
            return None
        value = getattr(config, self.logit_softcap_attr, None)
        return float(value) if value else None

    def unembedding_matrix(self, model: nn.Module) -> torch.Tensor:
        """``W_U`` as ``[d_model, vocab]`` (HF stores ``lm_head.weight`` as ``[vocab, d_model]``)."""
        weight = self.unembed_module(model).weight
        assert isinstance(weight, torch.Tensor)
        return weight.T

    def norm_eps(self, norm: nn.Module) -> float:
        for attr in ("variance_epsilon", "eps", "epsilon"):
            if hasattr(norm, attr):
                return float(getattr(norm, attr))
        raise UnsupportedArchitectureError(f"norm module {type(norm).__name__} has no eps attribute")


def _get(root: nn.Module, path: str) -> nn.Module:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, nn.Module)
    return obj


_LLAMA = Adapter(
    name="llama",
    model_types=("llama",),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn="self_attn",
    mlp="mlp",
    norm_kind="rms",
    pre_attn_norm="input_layernorm",
    pre_mlp_norm="post_attention_layernorm",
    notes="Llama 2/3, SmolLM2 (RMSNorm w·x̂)",
)
_GEMMA2 = replace(
    _LLAMA,
    name="gemma2",
    model_types=("gemma2",),
    norm_kind="rms_offset",
    pre_mlp_norm="pre_feedforward_layernorm",
    post_attn_norm="post_attention_layernorm",
    post_mlp_norm="post_feedforward_layernorm",
    logit_softcap_attr="final_logit_softcapping",
    attn_softcap_attr="attn_logit_softcapping",
    notes="Gemma-2: (1+w) RMSNorm, pre+post norms, softcaps",
)

#: The adapter table. One row per architecture family.
ADAPTERS: tuple[Adapter, ...] = (
    _LLAMA,
    replace(_LLAMA, name="qwen2", model_types=("qwen2",), notes="Qwen2/2.5 (q/k/v biases)"),
    replace(
        _LLAMA, name="qwen3", model_types=("qwen3",), notes="Qwen3 (q_norm/k_norm only shape the pattern)"
    ),
    _GEMMA2,
    replace(
        _GEMMA2,
        name="gemma3",
        model_types=("gemma3_text", "gemma3"),
        notes="Gemma-3 text: (1+w) RMSNorm, pre+post norms, q/k norms, scaled embedding",
    ),
    Adapter(
        name="gpt2",
        model_types=("gpt2",),
        attn_out_proj="c_proj",
        attn_fused_qkv="c_attn",
        layers="transformer.h",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attn="attn",
        mlp="mlp",
        norm_kind="layernorm",
        pre_attn_norm="ln_1",
        pre_mlp_norm="ln_2",
        notes="GPT-2: LayerNorm (mean-centring kept linear), learned positions (wpe) are a bias, not a node",
    ),
)


def adapter_for(model_or_config: nn.Module | object) -> Adapter:
    """Find the row for a model (or its config) by ``config.model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for row in ADAPTERS:
        if model_type in row.model_types:
            return row
    known = sorted(t for row in ADAPTERS for t in row.model_types)
    raise UnsupportedArchitectureError(
        f"model_type {model_type!r} has no row in tracewire's adapter table; supported: {', '.join(known)}"
    )
