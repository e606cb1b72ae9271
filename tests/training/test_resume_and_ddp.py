"""Kill-and-resume gives the uninterrupted run's parameters; a 2-process torchrun matches one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import tiny_corpus

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _worker(out: Path, corpus: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "tests.training.worker", str(out), str(corpus), *extra], check=check)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory.mktemp("corpus")).directory


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, corpus_dir):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _worker(straight, corpus_dir)
    result = _worker(killed, corpus_dir, "--kill-after", "5", check=False)
    assert result.returncode == -signal.SIGKILL
    latest = json.loads((killed / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4  # step 5 was lost with the process
    assert not (killed / "config.yaml").exists()
    _worker(killed, corpus_dir, "--resume")
    a, b = load_file(str(straight / "rank0.safetensors")), load_file(str(killed / "rank0.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    curves_a = json.loads((straight / "curves.json").read_text())
    curves_b = json.loads((killed / "curves.json").read_text())
    assert [c["loss"] for c in curves_a] == [c["loss"] for c in curves_b]


TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to this Python")
def test_torchrun_two_processes_match_one(tmp_path, corpus_dir):
    torchrun = str(TORCHRUN)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _worker(single, corpus_dir)
    _run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "tests.training.worker",
            str(ddp),
            str(corpus_dir),
        ]
    )
    r0, r1 = load_file(str(ddp / "rank0.safetensors")), load_file(str(ddp / "rank1.safetensors"))
    one = load_file(str(single / "rank0.safetensors"))
    for key in one:
        assert torch.equal(r0[key], r1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(r0[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    curves = json.loads((ddp / "curves.json").read_text())
    assert curves[-1]["loss"] < curves[0]["loss"]
    assert json.loads((ddp / "training.json").read_text())["world_size"] == 2
