"""`tracewire --version/--help`, `tracewire attribute` and `tracewire estimate` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories.assets import write_tiny_model_and_transcoders
from tracewire import __version__
from tracewire.cli.main import app
from tracewire.graph.graph import Graph
from tracewire.transcoders.io import save_transcoders
from tracewire.transcoders.synthetic import random_plt

runner = CliRunner()


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_model_and_transcoders(tmp_path_factory.mktemp("cli"))


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("attribute", "estimate", "models"):
        assert command in result.output


def test_attribute_writes_a_graph(assets: tuple[Path, Path], tmp_path: Path) -> None:
    model, tc = assets
    out = tmp_path / "g.safetensors"
    result = runner.invoke(
        app,
        [
            "attribute",
            "The capital of France is",
            "-m",
            str(model),
            "-t",
            str(tc),
            "-o",
            str(out),
            "--target",
            "Paris",
            "--max-feature-nodes",
            "20",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    graph = Graph.load(out)
    assert graph.n_features == 20 and graph.target_labels == ["Paris"]
    assert graph.token_strings[0] == "<|endoftext|>"
    assert "wrote" in result.output


def test_attribute_bad_transcoders_is_a_clean_error(assets: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = assets
    save_transcoders(random_plt(2, 16, 8), tmp_path / "tc2")
    result = runner.invoke(
        app,
        [
            "attribute",
            "The capital",
            "-m",
            str(model),
            "-t",
            str(tmp_path / "tc2"),
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_estimate(assets: tuple[Path, Path]) -> None:
    model, tc = assets
    result = runner.invoke(app, ["estimate", "-m", str(model), "-t", str(tc), "--prompt-tokens", "128"])
    assert result.exit_code == 0, result.output
    assert "predicted peak memory" in result.output


def test_estimate_on_a_prompt(assets: tuple[Path, Path]) -> None:
    model, tc = assets
    result = runner.invoke(app, ["estimate", "-m", str(model), "-t", str(tc), "--prompt", "a b c d e f"])
    assert result.exit_code == 0, result.output
    assert "predicted peak memory" in result.output and "backward passes" in result.output


def test_estimate_needs_exactly_one_prompt_option(assets: tuple[Path, Path]) -> None:
    model, tc = assets
    for extra in ([], ["--prompt", "a b", "--prompt-tokens", "8"]):
        result = runner.invoke(app, ["estimate", "-m", str(model), "-t", str(tc), *extra])
        assert result.exit_code == 2, result.output
        assert "exactly one of --prompt-tokens" in result.output
        assert "Traceback" not in result.output
