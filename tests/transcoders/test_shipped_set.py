"""The shipped set: ``smollm2-135m`` resolves to an installed data package, is the default
``--transcoders`` for the embedded model only, and says how to install it when it is missing.

The real package's weights are checked by ``benchmarks/quality_set.py``; here a tiny set stands in
for them, installed as the same package name on a temporary ``sys.path``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.factories.transcoders import random_set
from tracewire.cli.main import app
from tracewire.errors import TranscoderFormatError
from tracewire.transcoders import load_transcoders, presets, save_transcoders
from tracewire.transcoders.presets import EMBEDDED_MODEL, SHIPPED_PACKAGE, default_transcoders, find_preset


@pytest.fixture
def shipped_tiny_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny 3-layer set installed (on sys.path) under the shipped package's name."""
    package = tmp_path / "site" / SHIPPED_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    ts = random_set("skip-plt", n_layers=3, d_model=16, d_tc=8, seed=3)
    save_transcoders(ts, package)
    (package / "README.md").write_text("model card")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, SHIPPED_PACKAGE, raising=False)
    importlib.invalidate_caches()
    return ts, package


def test_preset_resolves_the_installed_package(shipped_tiny_set):
    ts, package = shipped_tiny_set
    loaded = load_transcoders(EMBEDDED_MODEL, n_layers=3, d_model=16)
    for layer in range(3):
        torch.testing.assert_close(loaded.W_enc[layer], ts.W_enc[layer])
        torch.testing.assert_close(loaded.W_dec[layer], ts.W_dec[layer])
    preset = find_preset("SmolLM2-135M")
    assert preset is not None and preset.package == SHIPPED_PACKAGE
    assert presets.shipped_directory(preset) == package.resolve()


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    preset = find_preset(EMBEDDED_MODEL)
    assert preset is not None
    missing = dataclasses.replace(preset, package="tracewire_no_such_package_xyz")
    monkeypatch.setitem(presets._BY_NAME, EMBEDDED_MODEL, missing)
    with pytest.raises(TranscoderFormatError, match="pip install -e packages/smollm2-135m-transcoders"):
        load_transcoders(EMBEDDED_MODEL, n_layers=30, d_model=576)


def test_default_is_the_shipped_set_for_the_embedded_model_only():
    assert default_transcoders(None, None) == EMBEDDED_MODEL
    assert default_transcoders(None, "smollm2-135m") == EMBEDDED_MODEL
    assert default_transcoders(None, "HuggingFaceTB/SmolLM2-135M-Instruct") == EMBEDDED_MODEL
    assert default_transcoders(None, "google/gemma-2-2b") is None
    assert default_transcoders("my/set", None) == "my/set"


def test_cli_asks_for_transcoders_for_another_model(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["attribute", "hi", "-m", "google/gemma-2-2b", "-o", str(tmp_path / "g")]
    )
    assert result.exit_code == 2
    assert "--transcoders is needed for --model 'google/gemma-2-2b'" in result.output
    assert not (tmp_path / "g").exists()
