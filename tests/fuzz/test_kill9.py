"""A few kill -9s of the suite: the previous good output survives, nothing half-written loads.

``benchmarks/kill9.py`` runs >= 10 kills of each of five writers; here two writers that take
seconds get two kills each, through the same driver and checks.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _kill9():
    spec = importlib.util.spec_from_file_location("kill9", ROOT / "benchmarks" / "kill9.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("op", ["graph-save", "corpus"])
def test_killed_writers_leave_a_loadable_previous_or_new_output(tmp_path: Path, op: str) -> None:
    result = _kill9().run_op(op, 2, tmp_path, random.Random(17))
    assert len(result["kills"]) == 2
    assert result["failures"] == 0, result["kills"]
