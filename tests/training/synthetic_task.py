"""A synthetic transcoder task with known ground-truth sparse features.

Every layer has ``n_true`` features with unit encoder directions ``E[l]`` and decoder directions;
a token activates each feature with probability ``p_active`` at a magnitude in [0.5, 1.5].
Inputs are ``x_l = Σ a_i E_l,i``; targets are ``y_t = Σ_{i, l ≤ t} a_l,i D_{l→t},i`` where a PLT
feature writes only to its own layer and a CLT feature to every later layer too. Batches are a pure
function of the step (and split evenly across DDP ranks), like the model-backed source.
"""

from __future__ import annotations

import torch
from torch import Tensor


class SparseFeatureTask:
    def __init__(
        self,
        kind: str,
        *,
        n_layers: int = 2,
        d_model: int = 16,
        n_true: int = 24,
        p_active: float = 0.05,
        batch_tokens: int = 512,
        seed: int = 0,
    ) -> None:
        self.kind, self.n_layers, self.d_model, self.n_true = kind, n_layers, d_model, n_true
        self.p_active, self.batch_tokens, self.seed = p_active, batch_tokens, seed
        g = torch.Generator().manual_seed(seed)

        def unit(*shape: int) -> Tensor:
            v = torch.randn(*shape, d_model, generator=g)
            return v / v.norm(dim=-1, keepdim=True)

        self.E = unit(n_layers, n_true)
        n_out = [n_layers - i if kind == "clt" else 1 for i in range(n_layers)]
        # A feature's decoders over all its targets, jointly unit norm (the CLT convention).
        self.D = []
        for i in range(n_layers):
            d = torch.randn(n_true, n_out[i], d_model, generator=g)
            self.D.append(d / d.flatten(1).norm(dim=-1)[:, None, None])

    def _acts(self, step: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 1)
        on = torch.rand(self.n_layers, self.batch_tokens, self.n_true, generator=g) < self.p_active
        mag = 0.5 + torch.rand(self.n_layers, self.batch_tokens, self.n_true, generator=g)
        return on * mag

    def _xy(self, a: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.einsum("lnf,lfd->lnd", a, self.E)
        y = torch.zeros_like(x)
        for i in range(self.n_layers):
            for j in range(self.D[i].shape[1]):
                y[i + j] += a[i] @ self.D[i][:, j]
        return x, y

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[Tensor, Tensor]:
        x, y = self._xy(self._acts(step))
        share = self.batch_tokens // world
        return x[:, rank * share : (rank + 1) * share], y[:, rank * share : (rank + 1) * share]

    def eval_batch(self) -> tuple[Tensor, Tensor]:
        return self._xy(self._acts(-1_000_000))

    def true_decoders(self, layer: int) -> Tensor:
        """``[n_true, n_out * d]``: each true feature's concatenated decoders."""
        return self.D[layer].flatten(1)


def mean_max_cosine(learned: Tensor, true: Tensor) -> float:
    """For each true direction, the best cosine among learned directions; averaged."""
    ln = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    tn = true / true.norm(dim=-1, keepdim=True)
    return float((tn @ ln.T).max(dim=1).values.mean())
