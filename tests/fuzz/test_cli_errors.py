"""Every CLI command reports bad input in one line (exit code 2), never a traceback; ``--debug`` shows it.

The subprocess tests run the real entry point, so what is asserted is what a user's terminal shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories.models import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tracewire.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def corrupt_graph(tmp_path: Path) -> Path:
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}garbage")
    return path


def test_prune_of_a_corrupt_graph_is_one_line(corrupt_graph: Path, tmp_path: Path) -> None:
    _assert_one_line(_cli("prune", str(corrupt_graph), "--json", str(tmp_path / "out")), str(corrupt_graph))


def test_scores_of_a_fifo_is_one_line_and_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "g.safetensors")
    _assert_one_line(_cli("scores", str(tmp_path / "g.safetensors")), "not a regular file")


def test_feature_of_a_broken_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "f.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    _assert_one_line(_cli("feature", "0", "0", "--store", str(tmp_path / "f.sqlite")), "f.sqlite")


def test_corpus_build_with_an_unknown_model_is_one_line(tmp_path: Path) -> None:
    _assert_one_line(_cli("corpus", "build", "-o", str(tmp_path / "c"), "--model", str(tmp_path / "none")))


def test_debug_shows_the_traceback(corrupt_graph: Path, tmp_path: Path) -> None:
    result = _cli("--debug", "prune", str(corrupt_graph), "--json", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "GraphFormatError" in result.stderr


def test_train_on_a_broken_corpus_fails_clearly_and_downloads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracewire.cli.main import app

    monkeypatch.setattr("tracewire.models.loading.load_model", lambda *a, **k: tiny_model("llama"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.json").write_text('{"format": "tracewire-token-corpus", "shards": 3}')
    result = CliRunner().invoke(app, ["train", "-o", str(tmp_path / "tc"), "--corpus", str(corpus)])
    assert result.exit_code == 2, result.output
    assert "field 'shards' is 3" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in corpus.iterdir()) == ["manifest.json"]  # nothing built into it
    (corpus / "manifest.json").unlink()
    result = CliRunner().invoke(app, ["train", "-o", str(tmp_path / "tc"), "--corpus", str(corpus)])
    assert result.exit_code == 2 and "no corpus manifest" in result.output
    assert list(corpus.iterdir()) == []
