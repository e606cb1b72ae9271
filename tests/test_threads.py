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
