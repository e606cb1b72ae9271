"""How many CPU threads a heavy step uses: the CPUs we may run on, minus those a neighbour keeps busy.

torch's default is one intra-op thread per physical core of the machine. On a laptop with a
browser, a build or another run beside it — or in a container whose affinity mask or cgroup quota
grants fewer CPUs — that oversubscribes: OpenMP's barrier makes every step wait for the thread
that was descheduled, so one busy neighbour slows a 2-thread run ~4× instead of ~2×. The policy:

1. **available** — CPUs in ``sched_getaffinity`` ∩ the cgroup CPU quota (v2 ``cpu.max``, v1
   ``cfs_quota_us``), rounded down, at least 1;
2. **contended** — a short calibration (``CALIBRATION_S`` of ``/proc/stat``) measures how many of
   those CPUs *other* processes keep busy (our own CPU time is subtracted), and that many are left
   to them (rounded to the nearest CPU, at least one thread stays);
3. **never above the caller's setting** — the count is capped by ``torch.get_num_threads()`` at
   entry, so a user's ``torch.set_num_threads`` is a ceiling, and it is restored on exit.

``TRACEWIRE_THREADS`` overrides: an integer forces that many threads, ``off`` leaves torch's
setting alone, ``auto`` (the default) applies the policy. One function, :func:`thread_policy`.

Long loops call :func:`refresh_threads` once per step: every ``REFRESH_S`` it re-applies the
policy, so a neighbour that starts or stops mid-run is followed (a 50 ms sample per 30 s).

Measured (``benchmarks/busy_neighbour.py``, 2-CPU box otherwise quiet, one ``yes`` pinned to one
CPU, best of 2; ``benchmarks/results/busy-neighbour.json``): busy / quiet without → with the
policy — attribution 2.88× → 1.43×, a training step 1.63× → 1.48×, a dashboard build 1.54× →
1.26×; busy, the policy made each faster (2.2×, 1.12×, 1.10×). So ``attribute`` (and with it the
explorer's attribution worker, which runs the CLI), ``train_transcoders`` and
``build_feature_store`` apply it. (An earlier run on a box loaded by other sessions had shown the
GEMM-bound two slower with the policy; on the quiet box they are not.)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import torch

from tracewire.errors import InvalidArgumentError

log = logging.getLogger(__name__)

ENV_VAR = "TRACEWIRE_THREADS"
#: Seconds of ``/proc/stat`` sampled to see how busy the other processes keep our CPUs.
CALIBRATION_S = 0.05
#: A calibration is reused for this long (attribute() in a loop should not sample every call).
CALIBRATION_TTL_S = 2.0
#: Inside a long loop the policy is re-applied this often (:func:`refresh_threads`).
REFRESH_S = 30.0

_P = ParamSpec("_P")
_R = TypeVar("_R")
_last_calibration: tuple[float, float] | None = None  # (monotonic time, busy CPUs elsewhere)
_active: list[list[float]] = []  # per open thread_policy: [ceiling, monotonic time it was last applied]


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs granted by the cgroup quota (``None``: unlimited or unknown)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def busy_cpus_elsewhere(seconds: float = CALIBRATION_S) -> float:
    """CPUs of our affinity set kept busy by *other* processes over ``seconds`` (0 if unknown)."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return 0.0
    before, own_before, t0 = _cpu_ticks(allowed), _own_ticks(), time.monotonic()
    time.sleep(seconds)
    after, own_after, t1 = _cpu_ticks(allowed), _own_ticks(), time.monotonic()
    if before is None or after is None or own_before is None or own_after is None:
        return 0.0
    hz = os.sysconf("SC_CLK_TCK")
    busy = (after[0] - before[0]) - (own_after - own_before)
    return max(0.0, busy / hz / max(t1 - t0, 1e-3))


def _cpu_ticks(allowed: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over the ``allowed`` CPUs, from ``/proc/stat``."""
    busy = total = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in allowed:
            continue
        fields = [int(x) for x in rest.split()]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total += sum(fields[:8])
        busy += sum(fields[:8]) - idle
    return busy, total


def _own_ticks() -> int | None:
    """utime + stime of this process (all threads) in jiffies."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])


def thread_count(ceiling: int | None = None) -> int | None:
    """Threads the policy grants (see the module docstring); ``None`` when ``TRACEWIRE_THREADS=off``."""
    setting = os.environ.get(ENV_VAR, "auto").strip().lower()
    if setting == "off":
        return None
    if setting != "auto":
        if not setting.isdigit() or int(setting) < 1:
            raise InvalidArgumentError(
                f"{ENV_VAR} must be a positive integer, 'auto' or 'off'; got {setting!r}"
            )
        return int(setting)
    global _last_calibration
    now = time.monotonic()
    if _last_calibration is None or now - _last_calibration[0] > CALIBRATION_TTL_S:
        _last_calibration = (now, busy_cpus_elsewhere())
    free = available_cpus() - round(_last_calibration[1])
    threads = max(1, free)
    return threads if ceiling is None else min(threads, ceiling)


@contextlib.contextmanager
def thread_policy(workload: str) -> Iterator[int]:
    """Run the block with :func:`thread_count` intra-op threads, restored afterwards; yields the count."""
    before = torch.get_num_threads()
    threads = thread_count(ceiling=before)
    if threads is None:
        yield before
        return
    if threads != before:
        log.info("%s: %d thread(s) (of %d; %s)", workload, threads, before, ENV_VAR)
    torch.set_num_threads(threads)
    _active.append([float(before), time.monotonic()])
    try:
        yield threads
    finally:
        _active.pop()
        torch.set_num_threads(before)


def refresh_threads() -> int:
    """Re-apply the innermost :func:`thread_policy` if ``REFRESH_S`` have passed since it was last
    applied (call it once per step of a long loop); returns the threads in use. Outside a policy,
    or with ``TRACEWIRE_THREADS=off``, it changes nothing."""
    if _active:
        ceiling, applied = _active[-1]
        now = time.monotonic()
        if now - applied >= REFRESH_S:
            _active[-1][1] = now
            threads = thread_count(ceiling=int(ceiling))
            if threads is not None and threads != torch.get_num_threads():
                log.info("%d thread(s) now (%s)", threads, ENV_VAR)
                torch.set_num_threads(threads)
    return torch.get_num_threads()


def use_thread_policy(workload: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator form of :func:`thread_policy` — the one line a heavy entry point needs."""

    def wrap(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with thread_policy(workload):
                return function(*args, **kwargs)

        return run

    return wrap
