"""The thread policy: CPUs from affinity and cgroup quota, fewer when contended, overrides, restore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import tracewire.threads as threads
from tracewire.errors import InvalidArgumentError


@pytest.fixture(autouse=True)
def _fresh_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_last_calibration", None)
    monkeypatch.delenv(threads.ENV_VAR, raising=False)


def test_cgroup_v2_and_v1_quotas_cap_the_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.available_cpus(tmp_path) == min(affinity, 1)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.available_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.available_cpus(tmp_path) == affinity
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert threads.available_cpus(tmp_path) == 1


def test_busy_neighbours_leave_fewer_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.setattr(threads, "busy_cpus_elsewhere", lambda: 2.6)
    assert threads.thread_count() == 5
    monkeypatch.setattr(threads, "_last_calibration", None)
    monkeypatch.setattr(threads, "busy_cpus_elsewhere", lambda: 30.0)
    assert threads.thread_count() == 1  # at least one thread
    assert threads.thread_count(ceiling=4) == 1


def test_calibration_is_reused_within_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus_elsewhere", lambda: calls.append(1) or 0.0)
    assert threads.thread_count(ceiling=3) == 3
    assert threads.thread_count() == 4
    assert len(calls) == 1


def test_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.ENV_VAR, "3")
    assert threads.thread_count(ceiling=1) == 3  # an explicit count beats the ceiling
    monkeypatch.setenv(threads.ENV_VAR, "off")
    assert threads.thread_count() is None
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(InvalidArgumentError, match="TRACEWIRE_THREADS must be a positive integer"):
        threads.thread_count()


def test_policy_sets_threads_inside_and_restores_them(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda: 64)
    monkeypatch.setattr(threads, "busy_cpus_elsewhere", lambda: 63.0)
    seen = []

    @threads.use_thread_policy("test")
    def work(x: int) -> int:
        seen.append(torch.get_num_threads())
        return x + 1

    assert work(1) == 2
    assert seen == [1]
    assert torch.get_num_threads() == before


def test_refresh_follows_a_neighbour_that_comes_and_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    busy = [0.0]
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus_elsewhere", lambda: busy[0])
    monkeypatch.setattr(threads, "CALIBRATION_TTL_S", 0.0)
    assert threads.refresh_threads() == before  # outside a policy: nothing changes
    with threads.thread_policy("test") as first:
        assert first == min(4, before)
        busy[0] = 3.0
        monkeypatch.setattr(threads, "REFRESH_S", 3600.0)
        assert threads.refresh_threads() == first  # not due yet
        monkeypatch.setattr(threads, "REFRESH_S", 0.0)
        assert threads.refresh_threads() == 1  # a neighbour came: 3 of 4 CPUs busy
        busy[0] = 0.0
        assert threads.refresh_threads() == first  # it left; never above the ceiling
        monkeypatch.setenv(threads.ENV_VAR, "off")
        busy[0] = 3.0
        assert threads.refresh_threads() == first  # off: left alone
    assert torch.get_num_threads() == before


def test_training_and_dashboard_builds_run_under_the_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A crowded machine (63 of 64 CPUs busy elsewhere): every training step and every dashboard
    batch runs on one thread, and the caller's setting is back afterwards."""
    from tests.dashboards.conftest import CONFIG
    from tests.dashboards.token_features import token_model, token_transcoders
    from tests.training.helpers import tiny_config, tiny_corpus, tiny_source
    from tracewire.dashboards import build_feature_store
    from tracewire.training import train_transcoders

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda: 64)
    monkeypatch.setattr(threads, "busy_cpus_elsewhere", lambda: 63.0)
    corpus = tiny_corpus(tmp_path)
    seen: list[tuple[str, int]] = []
    config = tiny_config(tokens=8 * 15 * 4)
    train_transcoders(
        config,
        tiny_source(corpus, config),
        tmp_path / "set",
        progress=False,
        on_step=lambda _s: seen.append(("train", torch.get_num_threads())),
    )
    loaded = token_model()
    build_feature_store(
        loaded,
        token_transcoders(loaded),
        corpus,
        tmp_path / "features.sqlite",
        tokens=200,
        config=CONFIG,
        progress=False,
        on_batch=lambda _b: seen.append(("dashboards", torch.get_num_threads())),
    )
    assert {kind for kind, _ in seen} == {"train", "dashboards"}
    assert all(n == 1 for _, n in seen), seen
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_makes_openmp_wait_passively_unless_told_otherwise(preset: str | None, expected: str) -> None:
    """Set before torch loads libgomp (which reads it once): the CLI module sets it at import."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    code = (
        "import sys, os, tracewire.cli.main; assert 'torch' not in sys.modules; "
        "print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
