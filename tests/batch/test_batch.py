"""Batch attribution: prompts files, a serial batch (resume, failures, index) and a 2-worker Ray batch."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.batch.assets import PROMPTS, save_tiny_assets, write_prompts
from tracewire.attribution.engine import attribute
from tracewire.batch import AttributionSettings, AttributionWorker, read_prompts, run_batch
from tracewire.batch.runner import graph_path
from tracewire.errors import CheckpointError, InvalidArgumentError
from tracewire.graph.graph import Graph
from tracewire.graph.scores import graph_scores


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> AttributionSettings:
    return save_tiny_assets(tmp_path_factory.mktemp("batch-assets"))


def without_metadata(graph: Graph) -> Graph:
    """Timings in the metadata differ between any two runs; everything else must be identical."""
    return replace(graph, metadata={})


def assert_bit_identical(a: Graph, b: Graph) -> None:
    assert without_metadata(a).diff(without_metadata(b)) == []


def test_read_prompts_text_and_jsonl(tmp_path: Path) -> None:
    text = write_prompts(tmp_path / "p.txt", ["The capital of France is", "", "Austin is"])
    jobs = read_prompts(text)
    assert [j.prompt for j in jobs] == ["The capital of France is", "Austin is"]
    assert [j.slug for j in jobs] == ["0000-the-capital-of-france", "0001-austin-is"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        json.dumps({"prompt": "Austin is", "targets": ["Texas"], "budget": 5, "slug": "austin"})
        + "\n"
        + json.dumps({"prompt": "France is"})
        + "\n"
    )
    jobs = read_prompts(jsonl)
    assert (jobs[0].slug, jobs[0].targets, jobs[0].budget) == ("austin", ["Texas"], 5)
    assert jobs[1].slug == "0001-france-is" and jobs[1].targets is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": ""}', "field 'prompt'"),
        ('{"prompt": "a", "budget": 0}', "field 'budget'"),
        ('{"prompt": "a", "targets": []}', "field 'targets'"),
        ('{"prompt": "a", "slug": "../x"}', "field 'slug'"),
        ('{"prompt": "a"', "not valid JSON"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidArgumentError, match=message) as info:
        read_prompts(path)
    assert f"{path}:1" in str(info.value)


def test_duplicate_slugs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text('{"prompt": "a", "slug": "x"}\n{"prompt": "b", "slug": "x"}\n')
    with pytest.raises(InvalidArgumentError, match="slug 'x' already used on line 1"):
        read_prompts(path)


def test_serial_batch_matches_attribute_records_failures_and_resumes(
    settings: AttributionSettings, tmp_path: Path
) -> None:
    prompts = tmp_path / "p.jsonl"
    lines = [{"prompt": p, "slug": f"p{i}"} for i, p in enumerate(PROMPTS[:3])]
    lines.insert(1, {"prompt": "France is", "targets": ["Paris Texas"], "slug": "bad"})  # not one token
    lines.append({"prompt": "Austin is", "targets": ["Texas"], "budget": 4, "slug": "budget"})
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    jobs = read_prompts(prompts)
    out = tmp_path / "out"
    report = run_batch(jobs, settings, out, progress=False)
    assert report.done == ["p0", "p1", "p2", "budget"] and list(report.failed) == ["bad"]
    assert "Paris Texas" in report.failed["bad"]

    worker = AttributionWorker(settings)  # the graphs equal a direct attribute() call
    for job in jobs:
        if job.slug == "bad":
            continue
        expected = attribute(
            job.prompt,
            worker.model,
            worker.transcoders,
            targets=job.targets,
            max_feature_nodes=job.budget,
            max_n_logits=3,
            batch_size=8,
            progress=False,
        )
        assert_bit_identical(Graph.load(graph_path(out, job.slug)), expected)

    index = json.loads((out / "index.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["p0", "p1", "p2", "budget"]
    assert index["failed"][0]["slug"] == "bad" and "Paris Texas" in index["failed"][0]["error"]
    budget_entry = index["graphs"][3]
    graph = Graph.load(out / budget_entry["graph"])
    assert budget_entry["targets"] == ["Texas"] == graph.target_labels and graph.n_features == 4
    assert budget_entry["replacement"] == pytest.approx(graph_scores(graph).replacement)

    # Resume: finished graphs are not touched; the failed prompt is tried again (and fails again).
    stamps = {slug: graph_path(out, slug).stat().st_mtime_ns for slug in report.done}
    half_written = out / "graphs" / ".bad.safetensors.x1y2.tmp"  # what a kill -9 during a save leaves
    half_written.write_bytes(b"\x00" * 10)
    again = run_batch(jobs, settings, out, progress=False)
    assert not half_written.exists()
    assert again.skipped == report.done and again.done == [] and list(again.failed) == ["bad"]
    assert {slug: graph_path(out, slug).stat().st_mtime_ns for slug in report.done} == stamps

    with pytest.raises(CheckpointError, match="max_feature_nodes"):
        run_batch(jobs, replace(settings, max_feature_nodes=7), out, progress=False)


def test_ray_batch_two_workers_bit_identical_and_survives_a_killed_worker(
    settings: AttributionSettings, tmp_path: Path, ray_cluster: ModuleType
) -> None:
    jobs = read_prompts(write_prompts(tmp_path / "p.txt", PROMPTS))
    serial = tmp_path / "serial"
    run_batch(jobs, settings, serial, progress=False)

    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_the_first_worker(result: dict[str, Any]) -> None:
        if not killed:  # after the first graph: kill the worker that made it (kill -9)
            killed.append(result["pid"])
            os.kill(result["pid"], signal.SIGKILL)

    first = run_batch(jobs, settings, out, workers=2, progress=False, on_result=kill_the_first_worker)
    assert len({w["pid"] for w in first.workers}) == 2 and all(w["threads"] == 1 for w in first.workers)
    assert killed and first.failed, "the killed worker's prompt is recorded as failed"
    assert all("worker died" in error for error in first.failed.values())
    finished = {slug: graph_path(out, slug).stat().st_mtime_ns for slug in first.done}
    assert len(finished) + len(first.failed) + len(first.pending) == len(jobs)
    for path in (out / "graphs").iterdir():  # no partial files: every file there loads
        if path.suffix == ".safetensors":
            Graph.load(path)

    second = run_batch(jobs, settings, out, workers=2, progress=False)
    assert sorted(second.skipped) == sorted(first.done) and not second.failed
    assert sorted(second.done) == sorted([*first.failed, *first.pending])
    assert {slug: graph_path(out, slug).stat().st_mtime_ns for slug in first.done} == finished
    for job in jobs:
        assert_bit_identical(Graph.load(graph_path(out, job.slug)), Graph.load(graph_path(serial, job.slug)))
    index = json.loads((out / "index.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == [job.slug for job in jobs] and index["failed"] == []
