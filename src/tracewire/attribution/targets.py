"""Attribution targets: which output directions the graph explains.

Three ways to say it, as in circuit-tracer:

- ``None``: the salient logits — the most likely next tokens until their cumulative probability
  reaches ``desired_logit_prob`` (0.95), at most ``max_n_logits`` (10);
- tokens: strings (each must be exactly one token) or ids;
- custom directions: ``CustomTarget(label, vector)`` or ``LogitDifference(label, plus, minus)``
  (e.g. logit of " Austin" minus logit of " Dallas").

A logit target's vector is the *demeaned* unembedding column ``W_U[:, v] − mean_v W_U[:, v]``:
the graph explains "logit of v minus the mean logit", which softmax cannot tell apart from the
logit itself, and which keeps a constant shift of every logit out of the graph. Targets read the
final-norm output, before any logit softcap, so the softcap never enters the linear model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tracewire.errors import TargetError
from tracewire.models.loading import LoadedModel


@dataclass(frozen=True)
class CustomTarget:
    """An arbitrary residual direction read at the last position."""

    label: str
    vector: torch.Tensor
    probability: float = 1.0


@dataclass(frozen=True)
class LogitDifference:
    """``logit(plus) − logit(minus)``; tokens as single-token strings or ids."""

    label: str
    plus: str | int
    minus: str | int
    probability: float = 1.0


TargetSpec = None | Sequence[str | int] | torch.Tensor | Sequence[CustomTarget | LogitDifference]


@dataclass
class Targets:
    """Resolved targets: labels, vocabulary ids (-1 for custom), weights and read-out vectors."""

    labels: list[str]
    token_ids: torch.Tensor  # int64 [K]
    probabilities: torch.Tensor  # float32 [K]
    vectors: torch.Tensor  # [K, d_model], model dtype

    def __len__(self) -> int:
        return len(self.labels)


def resolve_targets(
    loaded: LoadedModel,
    last_logits: torch.Tensor,
    spec: TargetSpec = None,
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
) -> Targets:
    """Resolve ``spec`` against the model; ``last_logits`` are the clean run's last-position logits."""
    unembed = loaded.adapter.unembedding_matrix(loaded.model).detach()  # [d, V]
    mean_column = unembed.float().mean(dim=1)
    probs = torch.softmax(last_logits.detach().float(), dim=-1)

    def demeaned(v: int) -> torch.Tensor:
        return (unembed[:, v].float() - mean_column).to(unembed.dtype)

    if spec is None:
        if max_n_logits < 1:
            raise TargetError(f"max_n_logits must be >= 1, got {max_n_logits}")
        top_p, top_i = probs.topk(min(max_n_logits, probs.numel()))
        cumulative = top_p.cumsum(0)
        keep = int(torch.searchsorted(cumulative, torch.tensor(desired_logit_prob)).item()) + 1
        keep = max(1, min(keep, top_i.numel()))
        ids = top_i[:keep].tolist()
        return _logit_targets(loaded, ids, probs, demeaned)

    items = spec.tolist() if isinstance(spec, torch.Tensor) else list(spec)
    if not items:
        raise TargetError("the list of attribution targets is empty")
    plain = [x for x in items if isinstance(x, (str, int))]
    if len(plain) == len(items):
        ids = [_token_id(loaded, x) for x in plain]
        return _logit_targets(loaded, ids, probs, demeaned)
    customs = [x for x in items if isinstance(x, (CustomTarget, LogitDifference))]
    if len(customs) == len(items):
        labels, vectors, weights = [], [], []
        for item in customs:
            if isinstance(item, LogitDifference):
                plus, minus = _token_id(loaded, item.plus), _token_id(loaded, item.minus)
                vectors.append((unembed[:, plus].float() - unembed[:, minus].float()).to(unembed.dtype))
            else:
                vec = torch.as_tensor(item.vector).reshape(-1)
                if vec.numel() != loaded.d_model:
                    raise TargetError(
                        f"custom target {item.label!r} has a vector of size {vec.numel()}, expected d_model="
                        f"{loaded.d_model}"
                    )
                vectors.append(vec.to(device=unembed.device, dtype=unembed.dtype))
            labels.append(item.label)
            weights.append(float(item.probability))
        return Targets(
            labels=labels,
            token_ids=torch.full((len(labels),), -1, dtype=torch.long),
            probabilities=torch.tensor(weights, dtype=torch.float32),
            vectors=torch.stack(vectors),
        )
    raise TargetError(
        "attribution targets must be all tokens (str/int) or all CustomTarget/LogitDifference, got "
        + ", ".join(sorted({type(x).__name__ for x in items}))
    )


def _token_id(loaded: LoadedModel, token: str | int) -> int:
    if isinstance(token, int):
        if not 0 <= token < loaded.vocab_size:
            raise TargetError(f"token id {token} is outside the vocabulary (size {loaded.vocab_size})")
        return token
    try:
        return loaded.token_id(token)
    except ValueError as exc:
        raise TargetError(str(exc)) from exc


def _logit_targets(loaded: LoadedModel, ids: list[int], probs: torch.Tensor, demeaned) -> Targets:  # type: ignore[no-untyped-def]
    labels = loaded.token_strings(ids)
    return Targets(
        labels=labels,
        token_ids=torch.tensor(ids, dtype=torch.long),
        probabilities=probs[ids].float().cpu(),
        vectors=torch.stack([demeaned(v) for v in ids]),
    )
