"""The seeded fuzz sample of the default suite: every loader, a few dozen malformed files each.

The sample runs in its own process (``python -m tests.fuzz.engine``) so the address-space cap
that turns an unbounded allocation into a reported failure does not apply to pytest itself.
``benchmarks/fuzz.py`` runs the same cases at >= 1,000 per loader.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.engine import FAILURES
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CASES = 12
SEED = 20261130


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fuzz") / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.engine",
        "--cases",
        str(CASES),
        "--seed",
        str(SEED),
        "--json",
        str(out),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"fuzz engine crashed ({result.returncode}):\n{result.stderr[-3000:]}"
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_malformed_files_are_refused_cleanly(report: dict[str, Any], target: str) -> None:
    counts = report["counts"][target]
    failures = [f for f in report["failures"] if f["target"] == target]
    assert not failures, "\n".join(f"{f['kind']}: {f['mutation']}\n{f['detail']}" for f in failures)
    assert sum(counts.values()) == CASES
    assert counts.get("refused", 0) >= CASES // 2, counts  # the sample really exercises the checks
    assert not set(counts) & set(FAILURES)
