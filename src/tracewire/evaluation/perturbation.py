"""Predicted versus actual: ablate graph features in the model and compare with the graph.

For each chosen feature node the graph predicts how much every target read-out moves when the
feature is (partly) ablated (``propagation``); the model is then actually intervened on in four
settings, from the graph's own idealisation to the real model:

- ``frozen_constrained``: attention, norms and every feature frozen (errors always are) — the
  linear local replacement model; compared with the *direct* prediction, and equal to it up to
  float rounding (a check of the whole pipeline rather than of the graph);
- ``frozen``: attention and norms frozen, features recomputed through the transcoders (their
  nonlinearity is the only thing the graph linearises); compared with the *total* prediction.
  Nothing renormalises the residual stream here, so transcoders whose features amplify each
  other from layer to layer make these effects grow without bound — itself a finding about the
  transcoders (random ones on SmolLM2 reach ~1e16; the ``unfrozen`` setting stays finite);
- ``unfrozen``: attention and norms live too, errors still held fixed;
- ``model``: the original model: real MLPs downstream, the intervention written through the
  feature's decoders.

A target's read-out is ``final_residual[-1] · target_vector`` (the graph's demeaned logit, before
any softcap), so predicted and actual are the same quantity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from tracewire.errors import InvalidArgumentError
from tracewire.evaluation.propagation import predicted_effects
from tracewire.graph.graph import Graph
from tracewire.interventions.api import Intervener
from tracewire.interventions.clean_run import CleanRun
from tracewire.interventions.spec import Intervention

#: setting name -> (Intervener.run keyword arguments, which prediction it is compared with)
SETTINGS: dict[str, tuple[dict[str, Any], str]] = {
    "frozen_constrained": (
        {"freeze_attention": True, "freeze_norms": True, "constrained_layers": "all"},
        "direct",
    ),
    "frozen": ({"freeze_attention": True, "freeze_norms": True}, "total"),
    "unfrozen": ({"freeze_attention": False, "freeze_norms": False}, "total"),
    "model": ({"freeze_attention": False, "freeze_norms": False, "propagate": "model"}, "total"),
}


@dataclass
class AblationRecord:
    """One ablated feature node: where it is, and predicted / actual target changes ``[K]``."""

    node: int
    layer: int
    pos: int
    feature: int
    activation: float
    influence: float
    group: str
    predicted: dict[str, list[float]] = field(default_factory=dict)  # "direct" / "total"
    actual: dict[str, list[float]] = field(default_factory=dict)  # per setting

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_graph_matches(graph: Graph, clean: CleanRun, *, rtol: float = 1e-3) -> None:
    """Raise ValueError unless the graph was made on this prompt with this model and these transcoders."""
    if not torch.equal(graph.tokens.cpu(), clean.tokens.cpu()):
        raise InvalidArgumentError("the graph's tokens differ from the prompt's clean run")
    if graph.n_layers != len(clean.activations):
        raise InvalidArgumentError(
            f"the graph has {graph.n_layers} layers but the model has {len(clean.activations)}"
        )
    if graph.n_features == 0:
        return
    layer, pos, feat = graph.features.T
    mine = clean.stacked_activations().float().cpu()[layer, pos, feat]
    theirs = graph.activations.float()
    tolerance = rtol * float(theirs.abs().max()) + 1e-5
    worst = float((mine - theirs).abs().max())
    if worst > tolerance:
        raise InvalidArgumentError(
            f"the graph's feature activations differ from these transcoders' by up to {worst:.3g} "
            f"(tolerance {tolerance:.3g}): was the graph made with this model and these transcoders?"
        )


def run_ablations(
    graph: Graph,
    engine: Intervener,
    clean: CleanRun,
    nodes: Sequence[int],
    groups: Sequence[str],
    influence: torch.Tensor,
    *,
    fraction: float = 1.0,
    settings: Sequence[str] = tuple(SETTINGS),
    batch_size: int = 16,
    progress: bool = True,
) -> list[AblationRecord]:
    """Ablate ``fraction`` of each feature node's activation, one node per batch element
    (``batch_size`` per forward), in each setting."""
    if not nodes:
        return []
    index = torch.tensor(list(nodes), dtype=torch.long)
    activations = graph.activations.double()[index]
    predicted = predicted_effects(graph, index, -fraction * activations)
    vectors = graph.target_vectors.to(dtype=torch.float64)
    baseline = clean.final_residual[-1].double().cpu() @ vectors.T
    records: list[AblationRecord] = []
    for i, (node, group) in enumerate(zip(nodes, groups)):
        layer, pos, feat = (int(v) for v in graph.features[node].tolist())
        records.append(
            AblationRecord(
                node=int(node),
                layer=layer,
                pos=pos,
                feature=feat,
                activation=float(activations[i]),
                influence=float(influence[node]),
                group=group,
                predicted={
                    "direct": predicted.direct_targets[i].tolist(),
                    "total": predicted.total_targets[i].tolist(),
                },
            )
        )
    ablations = [[Intervention.scale_by(r.layer, r.pos, r.feature, 1.0 - fraction)] for r in records]
    bar = tqdm(total=len(records) * len(settings), desc="ablations", unit="run", disable=not progress)
    for name in settings:
        kwargs = dict(SETTINGS[name][0])
        if kwargs.get("constrained_layers") == "all":
            kwargs["constrained_layers"] = range(engine.n_layers)
        for start in range(0, len(records), batch_size):
            chunk = ablations[start : start + batch_size]
            results = engine.run_batch(clean, chunk, keep_activations=False, **kwargs)
            for record, result in zip(records[start : start + batch_size], results):
                read = result.final_residual[-1].double().cpu() @ vectors.T
                record.actual[name] = (read - baseline).tolist()
            bar.update(len(chunk))
    bar.close()
    return records


def agreement(predicted: torch.Tensor, actual: torch.Tensor) -> dict[str, float | int | None]:
    """Pearson correlation and mean absolute error of paired effects (NaN-free for JSON)."""
    p, a = predicted.double().flatten(), actual.double().flatten()
    n = int(p.numel())
    out: dict[str, float | int | None] = {"n": n, "correlation": None, "mean_abs_error": None}
    if n == 0:
        return out
    out["mean_abs_error"] = float((p - a).abs().mean())
    out["max_abs_error"] = float((p - a).abs().max())
    out["mean_abs_actual"] = float(a.abs().mean())
    out["mean_abs_predicted"] = float(p.abs().mean())
    if n > 1:
        pc, ac = p - p.mean(), a - a.mean()
        denominator = math.sqrt(float((pc * pc).sum()) * float((ac * ac).sum()))
        out["correlation"] = float((pc * ac).sum()) / denominator if denominator > 0 else None
    return out


def summarize(records: Sequence[AblationRecord], settings: Sequence[str] = tuple(SETTINGS)) -> dict[str, Any]:
    """``{setting: {group: agreement}}`` for the groups present and ``all``."""
    groups = sorted({r.group for r in records})
    summary: dict[str, Any] = {}
    for name in settings:
        which = SETTINGS[name][1]
        per_group: dict[str, Any] = {"compared_with": which}
        for group in [*groups, "all"]:
            chosen = [r for r in records if group in ("all", r.group) and name in r.actual]
            if not chosen:
                continue
            predicted = torch.tensor([r.predicted[which] for r in chosen])
            actual = torch.tensor([r.actual[name] for r in chosen])
            per_group[group] = agreement(predicted, actual)
        summary[name] = per_group
    return summary
