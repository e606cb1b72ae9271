"""Attention internals of a frozen replay: head outputs, and queries/keys as linear functions.

The replacement layer freezes attention by replaying *stored* queries and keys, so nothing in a
replay says how the residual stream made them. This module adds the two views the attention
explanations need, on top of the public replay (``ReplacementModel.replay``) and without editing
the model-access layer:

- the *head outputs* ``z`` (the concatenated per-head ``P·V`` that the output projection reads,
  head-major: head ``h`` is columns ``h·dh … (h+1)·dh``), tapped through the model-access layer
  (``models.hooks.observe_attention``), optionally detached so that no source reaches the target
  through attention;
- queries and keys recomputed from the attention module's input (the frozen pre-attention norm's
  output) through the module's own projections, its q/k norms (Qwen3, Gemma-3) with their scales
  frozen at the clean run, like every other norm, and RoPE. The recomputation is checked against
  the queries and keys the clean run stored (:func:`check_against_state`), so a model whose
  attention differs from this recipe fails loudly instead of explaining the wrong numbers.

What differs between architectures (the output projection's name, GPT-2's fused ``c_attn``) is
in the adapter table (``Adapter.attn_out_proj`` / ``attn_fused_qkv``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from tracewire.errors import UnsupportedArchitectureError
from tracewire.models.hooks import observe_attention
from tracewire.replacement.linear_norms import linear_norm, norm_scale
from tracewire.replacement.model import ReplacementModel
from tracewire.replacement.state import FrozenState


@dataclass(frozen=True)
class HeadGeometry:
    """Heads of one model: ``n_heads`` query heads read ``n_kv_heads`` key/value heads (GQA)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The key/value head query head ``head`` reads (HF repeats each kv head ``group`` times)."""
        return head // self.group


def attention_module(rm: ReplacementModel, layer: int) -> nn.Module:
    return rm.adapter.attn_module(rm.model, layer)


def _child(module: nn.Module, name: str) -> nn.Module:
    child = getattr(module, name)
    assert isinstance(child, nn.Module), f"{type(module).__name__}.{name} is not a module"
    return child


def _head_dim(attn: nn.Module) -> int:
    return int(getattr(attn, "head_dim"))  # noqa: B009  (an int attribute, not a submodule)


def head_geometry(rm: ReplacementModel) -> HeadGeometry:
    attn = attention_module(rm, 0)
    n_heads = int(rm.loaded.config.num_attention_heads)
    group = int(getattr(attn, "num_key_value_groups", 1) or 1)
    return HeadGeometry(n_heads=n_heads, n_kv_heads=n_heads // group, head_dim=_head_dim(attn))


def attention_scaling(rm: ReplacementModel, layer: int) -> float:
    """The factor the module multiplies ``q·k`` by (``1/sqrt(dh)``, Gemma's query_pre_attn_scalar)."""
    attn = attention_module(rm, layer)
    scaling = getattr(attn, "scaling", None)
    return float(scaling) if scaling is not None else float(_head_dim(attn)) ** -0.5


def attention_softcap(rm: ReplacementModel, layer: int) -> float | None:
    """Gemma-2's ``tanh`` cap on attention scores (applied after the scaling), else ``None``."""
    value = getattr(attention_module(rm, layer), "attn_logit_softcapping", None)
    return float(value) if value else None


@dataclass
class AttentionCapture:
    """What the hooks saw in one replay, per layer."""

    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # attention input [B, P, d]
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=dict)
    mask: dict[int, torch.Tensor | None] = field(default_factory=dict)
    head_outputs: dict[int, torch.Tensor] = field(default_factory=dict)  # z: [B, P, H * dh]


@contextmanager
def capture_attention(
    rm: ReplacementModel, layers: list[int], *, detach_heads: bool = False
) -> Iterator[AttentionCapture]:
    """Record attention inputs and head outputs of ``layers`` in the replays run inside.

    ``detach_heads``: every head output becomes a fresh leaf (same value), so a backward from a
    target reaches sources only through the residual stream and the MLP skips — never through
    attention — and its gradient at the leaf is the target's "no later attention" sensitivity.
    """
    capture = AttentionCapture()

    def on_input(
        layer: int,
        hidden: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> None:
        capture.hidden[layer] = hidden
        capture.rotary[layer] = rotary
        capture.mask[layer] = mask

    def on_head_outputs(layer: int, z: torch.Tensor) -> torch.Tensor:
        if detach_heads:
            z = z.detach().requires_grad_(True)
        capture.head_outputs[layer] = z
        return z

    with observe_attention(rm.model, rm.adapter, layers, on_input, on_head_outputs):
        yield capture


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@dataclass
class QKProjector:
    """Queries and keys of one layer as an affine function of the attention input.

    ``q_scale`` / ``k_scale``: the q/k norms' frozen denominators ``[1, P, heads, 1]`` from the
    clean run (``None`` where the module has no q/k norm).
    """

    rm: ReplacementModel
    layer: int
    q_scale: torch.Tensor | None = None
    k_scale: torch.Tensor | None = None

    def project(
        self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q [B, H, P, dh], k [B, Hkv, P, dh])`` from ``hidden [B, P, d]``, as the module computes them."""
        q, k = self._pre_norm(hidden)
        attn = attention_module(self.rm, self.layer)
        kind = self.rm.adapter.norm_kind
        length = hidden.shape[1]
        if self.q_scale is not None:
            q = linear_norm(kind, _child(attn, "q_norm"), q, self.q_scale[:, :length])
        if self.k_scale is not None:
            k = linear_norm(kind, _child(attn, "k_norm"), k, self.k_scale[:, :length])
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if rotary is not None:
            cos, sin = rotary[0][:, None], rotary[1][:, None]
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        return q, k

    def _pre_norm(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections before any q/k norm, ``[B, P, heads, dh]``."""
        attn = attention_module(self.rm, self.layer)
        shape = (*hidden.shape[:-1], -1, _head_dim(attn))
        fused = self.rm.adapter.attn_fused_qkv
        if fused is not None:
            width = hidden.shape[-1]  # GPT-2: q, k, v of n_embd each, side by side
            q, k, _ = _child(attn, fused)(hidden).split(width, dim=2)
            return q.view(shape), k.view(shape)
        return _child(attn, "q_proj")(hidden).view(shape), _child(attn, "k_proj")(hidden).view(shape)

    @staticmethod
    def freeze(rm: ReplacementModel, layer: int, clean_hidden: torch.Tensor) -> QKProjector:
        """A projector whose q/k norm scales are those of the clean attention input ``[1, P, d]``."""
        projector = QKProjector(rm, layer)
        attn = attention_module(rm, layer)
        if hasattr(attn, "q_norm") and hasattr(attn, "k_norm"):
            with torch.no_grad():
                q, k = projector._pre_norm(clean_hidden)
            kind = rm.adapter.norm_kind
            projector.q_scale = norm_scale(kind, q, rm.adapter.norm_eps(_child(attn, "q_norm")))
            projector.k_scale = norm_scale(kind, k, rm.adapter.norm_eps(_child(attn, "k_norm")))
        return projector


def check_against_state(
    q: torch.Tensor, k: torch.Tensor, state: FrozenState, layer: int, *, rtol: float = 1e-3
) -> None:
    """Raise when recomputed ``q``/``k`` (``[1, heads, P, dh]``) differ from the clean run's."""
    length = q.shape[2]
    for name, mine, stored in (
        ("queries", q, state.queries[layer][:, :, :length]),
        ("keys", k, state.keys[layer][:, :, :length]),
    ):
        stored_f = stored.float()
        scale = float(stored_f.abs().max()) or 1.0
        gap = float((mine.detach().float() - stored_f).abs().max())
        if gap > rtol * scale + 1e-6:
            raise UnsupportedArchitectureError(
                f"layer {layer}: {name} recomputed from the attention input differ from the model's by "
                f"{gap:.3g} (largest |value| {scale:.3g}); tracewire.attention does not know this "
                "attention variant"
            )


def additive_mask(mask: torch.Tensor | None, query: int, n_keys: int) -> torch.Tensor:
    """Row ``query`` of the attention mask over keys ``0..n_keys-1`` as additive float (causal if None)."""
    if mask is None:
        keys = torch.arange(n_keys)
        return torch.zeros(n_keys).masked_fill(keys > query, float("-inf"))
    row = mask[0, 0, query, :n_keys].cpu()
    if row.dtype == torch.bool:
        return torch.zeros(n_keys).masked_fill(~row, float("-inf"))
    return row.float()
