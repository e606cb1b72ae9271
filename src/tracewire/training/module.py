"""The trainable transcoder: all layers in stacked tensors, working in standardised units.

Training works on standardised activations, ``x̃ = (x − μ_in) / s_in`` and ``ỹ = (y − μ_out) / s_out``
(per-dimension means, one scale per layer), so that one learning rate, one sparsity coefficient and
one threshold init suit every layer of every model. The standardisation is affine, so it folds
exactly into the weights on export (:meth:`TrainableTranscoders.export`):

- ``W_enc' = W_enc / s_in``, ``b_enc' = b_enc − W_enc' μ_in`` (pre-activations unchanged, so
  thresholds and TopK selections are unchanged);
- ``W_dec' = s_out[target] · W_dec``, ``W_skip' = (s_out / s_in) · W_skip``,
  ``b_dec' = s_out · b_dec + μ_out − W_skip' μ_in``.

Layouts are layer-major (``[n_layers, n_tokens, d]``) so every layer's encoder is one batched
matmul. CLT decoders are a list (layer ``i`` writes to layers ``i..L-1``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tracewire.training.config import TrainConfig
from tracewire.transcoders import LayerWeights, TranscoderConfig, TranscoderSet
from tracewire.transcoders import input_hook as to_input_hook
from tracewire.transcoders import output_hook as to_output_hook
from tracewire.transcoders.cross_layer import CrossLayerTranscoder
from tracewire.transcoders.per_layer import PerLayerTranscoders


class _JumpReLU(torch.autograd.Function):
    """``a = h·1[h > θ]`` with θ = exp(log θ); straight-through (rectangle kernel) gradient for log θ.

    Same estimator as ``tracewire.transcoders.activations``; parametrising by log θ keeps θ positive.
    """

    @staticmethod
    def forward(ctx, pre: Tensor, log_threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        threshold = log_threshold.exp().to(pre.dtype)
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_out * (pre > threshold).to(grad_out.dtype)
        window = ((pre - threshold).abs() < eps / 2).to(grad_out.dtype)
        # d a / d θ ≈ −(θ/ε)·K; chain rule through θ = exp(log θ) multiplies by θ.
        grad_theta = (-(threshold / eps) * window * grad_out).float().sum_to_size(threshold.shape)
        return grad_pre, grad_theta * threshold.float(), None


class TrainableTranscoders(nn.Module):
    """PLT / skip-PLT / CLT with the activation of ``config``, plus its standardisation buffers."""

    mu_in: Tensor
    mu_out: Tensor
    s_in: Tensor
    s_out: Tensor
    batchtopk_threshold: Tensor

    def __init__(self, config: TrainConfig, n_layers: int, d_model: int, generator: torch.Generator) -> None:
        super().__init__()
        self.config = config
        self.n_layers, self.d_model, self.n_features = n_layers, d_model, config.features
        L, d, F = n_layers, d_model, config.features

        def randn(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=generator)

        # Encoder rows of unit norm: pre-activations of standardised inputs start at unit scale.
        self.W_enc = nn.Parameter(randn(L, F, d) / math.sqrt(d))
        self.b_enc = nn.Parameter(torch.zeros(L, F))
        dec_scale = 0.1 / math.sqrt(F)
        if config.kind == "clt":
            self.W_dec_clt = nn.ParameterList(
                [nn.Parameter(randn(F, L - i, d) * dec_scale / math.sqrt(L - i)) for i in range(L)]
            )
        else:
            self.W_dec = nn.Parameter(randn(L, F, d) * dec_scale)
        self.b_dec = nn.Parameter(torch.zeros(L, d))
        self.W_skip = nn.Parameter(torch.zeros(L, d, d)) if config.has_skip else None
        self.log_threshold = (
            nn.Parameter(torch.full((L, F), math.log(config.threshold_init)))
            if config.activation == "jumprelu"
            else None
        )
        # BatchTopK is exported as JumpReLU with this per-layer threshold (EMA of the batch cut-off).
        self.register_buffer("batchtopk_threshold", torch.zeros(L))
        for name in ("mu_in", "mu_out"):
            self.register_buffer(name, torch.zeros(L, d))
        for name in ("s_in", "s_out"):
            self.register_buffer(name, torch.ones(L))

    # ----------------------------------------------------------------- standardisation

    def set_standardisation(self, mu_in: Tensor, s_in: Tensor, mu_out: Tensor, s_out: Tensor) -> None:
        for name, value in (("mu_in", mu_in), ("s_in", s_in), ("mu_out", mu_out), ("s_out", s_out)):
            getattr(self, name).copy_(value)

    def standardise(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Raw ``[L, N, d]`` inputs/targets -> standardised units."""
        xs = (x - self.mu_in[:, None, :]) / self.s_in[:, None, None]
        ys = (y - self.mu_out[:, None, :]) / self.s_out[:, None, None]
        return xs, ys

    # ----------------------------------------------------------------- forward

    def pre_activations(self, xs: Tensor) -> Tensor:
        """``[L, N, d] -> [L, N, F]``."""
        return torch.baddbmm(self.b_enc[:, None, :].to(xs.dtype), xs, self.W_enc.transpose(1, 2).to(xs.dtype))

    def activate(self, pre: Tensor) -> Tensor:
        act = self.config.activation
        if act == "relu":
            return torch.relu(pre)
        if act == "jumprelu":
            assert self.log_threshold is not None
            out: Tensor = _JumpReLU.apply(pre, self.log_threshold[:, None, :], self.config.bandwidth)
            return out
        k = self.config.k
        assert k is not None
        if act == "topk":
            values, indices = pre.topk(k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        # batchtopk: per layer, keep the k·N largest activations of the whole batch.
        L, N, F = pre.shape
        if not self.training:
            return pre * (pre > self.batchtopk_threshold[:, None, None].to(pre.dtype)).to(pre.dtype)
        flat = torch.relu(pre).reshape(L, N * F)
        values, indices = flat.topk(min(k * N, N * F), dim=-1, sorted=False)
        with torch.no_grad():
            cutoff = values.min(dim=-1).values.float()
            # The first batch sets the threshold outright: an EMA from 0 would take ~100 steps to
            # reach the cut-off, and a run exported before then would fire far more than k features.
            unset = self.batchtopk_threshold == 0
            self.batchtopk_threshold.copy_(
                torch.where(unset, cutoff, 0.99 * self.batchtopk_threshold + 0.01 * cutoff)
            )
        return torch.zeros_like(flat).scatter(-1, indices, values).reshape(L, N, F)

    def decoder_norms(self) -> Tensor:
        """``‖W_dec,i‖`` per layer and feature ``[L, F]`` (a CLT feature: all its decoders concatenated)."""
        if self.config.kind == "clt":
            return torch.stack([w.pow(2).sum(dim=(1, 2)).sqrt() for w in self.W_dec_clt])
        return self.W_dec.norm(dim=-1)

    def decode(self, acts: Tensor, xs: Tensor) -> Tensor:
        """Standardised reconstruction of every output layer ``[L, N, d]``."""
        dtype = acts.dtype
        if self.config.kind == "clt":
            L, N, _ = acts.shape
            parts: list[Tensor] = [self.b_dec[t].to(dtype).expand(N, -1) for t in range(L)]
            for i, w in enumerate(self.W_dec_clt):
                written = (acts[i] @ w.reshape(self.n_features, -1).to(dtype)).reshape(N, L - i, self.d_model)
                for j in range(L - i):
                    parts[i + j] = parts[i + j] + written[:, j]
            out = torch.stack(parts)
        else:
            out = torch.baddbmm(self.b_dec[:, None, :].to(dtype), acts, self.W_dec.to(dtype))
        if self.W_skip is not None:
            out = out + torch.bmm(xs.to(dtype), self.W_skip.transpose(1, 2).to(dtype))
        return out

    def forward(self, xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Standardised inputs ``[L, N, d]`` -> (reconstruction ``[L, N, d]``, acts, pre-activations)."""
        pre = self.pre_activations(xs)
        acts = self.activate(pre)
        return self.decode(acts, xs), acts, pre

    def threshold(self) -> Tensor | None:
        """Per-feature thresholds ``[L, F]`` (JumpReLU) or the BatchTopK cut-offs broadcast; else None."""
        if self.log_threshold is not None:
            return self.log_threshold.exp()
        if self.config.activation == "batchtopk":
            return self.batchtopk_threshold[:, None].expand(-1, self.n_features)
        return None

    # ----------------------------------------------------------------- export

    @torch.no_grad()
    def export(self, *, model_name: str | None = None) -> TranscoderSet:
        """A ``TranscoderSet`` in raw (model) units: standardisation folded into the weights."""
        cfg = self.config
        L = self.n_layers
        s_in, s_out, mu_in, mu_out = self.s_in, self.s_out, self.mu_in, self.mu_out
        thresholds = self.threshold()
        activation = {"batchtopk": "jumprelu"}.get(cfg.activation, cfg.activation)
        layers = []
        for i in range(L):
            W_enc = self.W_enc[i] / s_in[i]
            b_enc = self.b_enc[i] - W_enc @ mu_in[i]
            if cfg.kind == "clt":
                W_dec = self.W_dec_clt[i] * s_out[i:][None, :, None]  # each target layer's own scale
            else:
                W_dec = self.W_dec[i] * s_out[i]
            b_dec = s_out[i] * self.b_dec[i] + mu_out[i]
            W_skip = None
            if self.W_skip is not None:
                W_skip = self.W_skip[i] * (s_out[i] / s_in[i])
                b_dec = b_dec - W_skip @ mu_in[i]
            layers.append(
                LayerWeights(
                    W_enc=W_enc.clone(),
                    b_enc=b_enc.clone(),
                    W_dec=W_dec.clone(),
                    b_dec=b_dec.clone(),
                    threshold=thresholds[i].clone()
                    if thresholds is not None and activation == "jumprelu"
                    else None,
                    W_skip=W_skip.clone() if W_skip is not None else None,
                )
            )
        config = TranscoderConfig(
            kind=cfg.set_kind,
            model_name=model_name,
            feature_input_hook=to_input_hook(cfg.input_site),
            feature_output_hook=to_output_hook(cfg.output_site),
            activation=activation,
            k=cfg.k if activation == "topk" else None,
            n_layers=L,
            d_model=self.d_model,
            d_transcoder=self.n_features,
            has_skip=cfg.has_skip,
        )
        cls = CrossLayerTranscoder if cfg.kind == "clt" else PerLayerTranscoders
        return cls(config, layers)
