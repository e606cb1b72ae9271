"""Training losses and the per-layer reconstruction metrics, in one place.

All terms are in standardised units and averaged over layers, so their sizes do not depend on
the model's activation scale or depth:

- ``mse``: mean over layers of ‖ŷ − y‖² / d per token (≈ FVU, since standardised targets have unit
  mean variance per dimension);
- ``sparsity``: Σ_f tanh(c·‖W_dec,f‖·a_f) per token (Anthropic's penalty; a CLT feature's
  ‖W_dec‖ is the norm of all its decoders), weighted by the ramped coefficient λ(t);
- ``preact``: Σ_f relu(θ_f − h_f)·‖W_dec,f‖ (θ = 0 for ReLU), which pulls the pre-activations of
  never-firing features back towards their threshold so they can come back to life.

TopK and BatchTopK fix L0 by construction, so they use the MSE alone, plus (``auxk`` > 0) the
AuxK term: the dead features' top pre-activations fitted to the live features' error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tracewire.training.config import TrainConfig
from tracewire.training.module import TrainableTranscoders


@dataclass
class LossTerms:
    total: Tensor
    mse: Tensor
    sparsity: Tensor
    preact: Tensor
    auxk: Tensor | None = None


def sparsity_coefficient(config: TrainConfig, step: int, total_steps: int, time_frac: float = 0.0) -> float:
    """λ(t): linear ramp from 0 to ``sparsity_coef`` over the first ``sparsity_warmup`` of the run.

    ``time_frac`` (share of a wall-time budget used) advances the ramp when it is ahead of the steps.
    """
    if config.activation in ("topk", "batchtopk"):
        return 0.0
    ramp_steps = max(1.0, config.sparsity_warmup * total_steps)
    progress = max((step + 1) / ramp_steps, time_frac / max(config.sparsity_warmup, 1e-9))
    return config.sparsity_coef * min(1.0, progress)


def learning_rate(config: TrainConfig, step: int, total_steps: int, time_frac: float = 0.0) -> float:
    """Linear warm-up, constant, then linear decay to zero over the last ``decay_frac`` of the run.

    Under a wall-time budget (``time_frac`` = share used) the decay starts when either the steps or
    the time reach the last ``decay_frac``, so a run cut by the clock still ends on a low rate.
    """
    warm = max(1, round(config.warmup_frac * total_steps))
    decay_start = total_steps - round(config.decay_frac * total_steps)
    if step < warm:
        lr = config.lr * (step + 1) / warm
    elif step >= decay_start and total_steps > decay_start:
        lr = config.lr * max(0.0, (total_steps - step) / (total_steps - decay_start))
    else:
        lr = config.lr
    if config.decay_frac > 0 and time_frac > 1 - config.decay_frac:
        lr = min(lr, config.lr * max(0.0, (1 - time_frac) / config.decay_frac))
    return lr


def compute_losses(
    module: TrainableTranscoders, recon: Tensor, ys: Tensor, acts: Tensor, pre: Tensor, sparsity_coef: float
) -> LossTerms:
    cfg = module.config
    d = ys.shape[-1]
    mse = (recon.float() - ys).pow(2).sum(-1).mean() / d
    zero = mse.new_zeros(())
    sparsity = preact = zero
    if cfg.activation in ("relu", "jumprelu"):
        norms = module.decoder_norms()  # [L, F]
        if sparsity_coef > 0:
            sparsity = torch.tanh(cfg.tanh_scale * acts.float() * norms[:, None, :]).sum(-1).mean()
        if cfg.preact_coef > 0:
            theta = module.threshold()
            gap = (theta[:, None, :] if theta is not None else 0.0) - pre.float()
            preact = (torch.relu(gap) * norms[:, None, :]).sum(-1).mean()
    total = mse + sparsity_coef * sparsity + cfg.preact_coef * preact
    return LossTerms(total=total, mse=mse, sparsity=sparsity, preact=preact)


def auxk_loss(
    module: TrainableTranscoders, recon: Tensor, ys: Tensor, pre: Tensor, dead: Tensor
) -> Tensor | None:
    """AuxK (Gao et al. 2024): ‖e − ê_dead‖² / ‖e‖², where ``e = y − ŷ`` (no gradient) and ``ê_dead``
    decodes only the ``auxk`` largest pre-activations among the ``dead`` ``[L, F]`` features.

    Per-layer transcoders only (the config refuses ``auxk`` for a CLT). None when no feature is dead.
    Dead features get gradient only from this term, towards
    directions the live features fail to explain; live features are untouched by it.
    """
    cfg = module.config
    n_dead = int(dead.sum(1).max())
    if n_dead == 0:
        return None
    k = min(cfg.auxk, n_dead)
    masked = pre.float().masked_fill(~dead[:, None, :], float("-inf"))
    values, indices = masked.topk(k, dim=-1, sorted=False)
    values = torch.relu(values.nan_to_num(neginf=0.0))
    aux_acts = torch.zeros_like(masked).scatter(-1, indices, values)
    err = (ys.float() - recon.float()).detach()
    aux_recon = torch.bmm(aux_acts, module.W_dec.float())
    return (aux_recon - err).pow(2).sum() / err.pow(2).sum().clamp_min(1e-12)


@torch.no_grad()
def layer_fvu(recon: Tensor, target: Tensor) -> Tensor:
    """Per-layer fraction of variance unexplained ``[L]``: Σ‖ŷ − y‖² / Σ‖y − ȳ‖² over the batch."""
    err = (recon.float() - target.float()).pow(2).sum(dim=(1, 2))
    var = (target.float() - target.float().mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))
    return err / var.clamp_min(1e-12)


@torch.no_grad()
def layer_l0(acts: Tensor) -> Tensor:
    """Mean number of active features per token, per layer ``[L]``."""
    return (acts != 0).float().sum(-1).mean(-1)
