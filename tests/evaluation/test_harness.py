"""The faithfulness harness on tiny random models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.factories.models import random_ids
from tests.interventions.setups import setup
from tracewire.attribution.engine import attribute
from tracewire.evaluation import budget_curve, evaluate_graph
from tracewire.evaluation.perturbation import SETTINGS
from tracewire.evaluation.plot import save_plot
from tracewire.graph.scores import graph_scores


@pytest.fixture(scope="module")
def made():
    lm, ts = setup("llama", "skip", "relu", seed=1)
    graph = attribute(random_ids(7, seed=1), lm, ts, progress=False)
    return lm, ts, graph


def test_predicted_equals_actual_in_the_frozen_constrained_model_and_unfrozen_is_reported(
    made, tmp_path
) -> None:
    lm, ts, graph = made
    report = evaluate_graph(graph, lm, ts, k=6, n_random=6, batch_size=5, progress=False)
    assert [r.group for r in report.ablations] == ["top"] * 6 + ["random"] * 6
    assert report.summary["frozen_constrained"]["compared_with"] == "direct"
    exact = report.summary["frozen_constrained"]["all"]
    assert exact["max_abs_error"] < 1e-5 and exact["correlation"] > 0.99999
    assert exact["mean_abs_actual"] > 1e-3
    for name in ("frozen", "unfrozen", "model"):
        stats = report.summary[name]["all"]
        assert stats["n"] == 12 * graph.n_targets
        assert math.isfinite(stats["correlation"]) and math.isfinite(stats["mean_abs_error"])
    # the frozen model differs from the graph only by the features' nonlinearity: still close
    assert report.summary["frozen"]["all"]["correlation"] > 0.95

    data = report.to_json()
    path = report.save_json(tmp_path / "r.json")
    assert json.loads(path.read_text())["summary"] == json.loads(json.dumps(data["summary"]))
    assert set(data["settings"]) == set(SETTINGS)
    png = save_plot(report, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_small_ablations_follow_the_linear_prediction_in_the_frozen_model(made) -> None:
    """With a 1% ablation no feature crosses its threshold, so iterating the frozen model through
    the transcoders equals propagating along the graph's edges (direct + indirect)."""
    lm, ts, graph = made
    report = evaluate_graph(
        graph, lm, ts, k=8, n_random=0, fraction=0.01, settings=("frozen", "unfrozen"), progress=False
    )
    one_by_one = evaluate_graph(
        graph, lm, ts, k=8, n_random=0, fraction=0.01, settings=("frozen",), batch_size=1, progress=False
    )
    for a, b in zip(report.ablations, one_by_one.ablations):
        assert a.actual["frozen"] == pytest.approx(b.actual["frozen"], abs=1e-6)
    frozen = report.summary["frozen"]["all"]
    assert frozen["max_abs_error"] < 1e-3 * frozen["mean_abs_actual"] + 1e-7
    direct = torch.tensor([r.predicted["direct"] for r in report.ablations])
    total = torch.tensor([r.predicted["total"] for r in report.ablations])
    assert (direct - total).abs().max() > 10 * frozen["max_abs_error"]  # indirect paths matter here
    assert report.summary["unfrozen"]["all"]["mean_abs_error"] > frozen["max_abs_error"]


def test_budget_curve_ends_at_the_full_graph(made) -> None:
    _, _, graph = made
    curve = budget_curve(graph)
    full = graph_scores(graph)
    assert curve.budgets[0] == 0 and curve.budgets[-1] == graph.n_features
    assert curve.replacement[-1] == pytest.approx(full.replacement)
    assert curve.completeness[-1] == pytest.approx(full.completeness)
    data = curve.to_json()
    assert 0 <= data["replacement_area"] <= 1 and 0 <= data["completeness_area"] <= 1
    assert data["replacement_area_to_one"] == pytest.approx(1 - data["replacement_area"])


def test_a_graph_from_other_transcoders_is_refused(made) -> None:
    lm, _, graph = made
    _, other = setup("llama", "skip", "relu", seed=2)
    with pytest.raises(ValueError, match="was the graph made with this model and these transcoders"):
        evaluate_graph(graph, lm, other, k=1, n_random=0, progress=False)
    with pytest.raises(ValueError, match="unknown settings"):
        evaluate_graph(graph, lm, other, settings=("exact",), progress=False)
