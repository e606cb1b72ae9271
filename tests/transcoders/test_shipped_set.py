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


@pytest.mark.slow
def test_the_real_shipped_set_loads_fits_and_is_the_cli_default(tmp_path: Path):
    """The installed data package (the weights in this repository), on the embedded model."""
    from tracewire.graph import Graph
    from tracewire.models.hooks import capture_sites
    from tracewire.models.loading import load_model

    loaded = load_model("smollm2-135m")
    ts = load_transcoders("smollm2-135m", n_layers=loaded.n_layers, d_model=loaded.d_model)
    assert (ts.n_layers, ts.d_transcoder, ts.has_skip, ts.config.activation) == (30, 1024, True, "jumprelu")
    ids = loaded.encode("The capital of France is", prepend_bos=True)[None]
    values = capture_sites(loaded, ids, ts.config.input_site, ts.config.output_site)
    xs = [values.inputs[layer][0, 1:] for layer in range(ts.n_layers)]
    acts = [ts.encode(layer, x) for layer, x in enumerate(xs)]
    recon = ts.reconstruct(xs, acts)
    # Relative error per token ‖ŷ − y‖² / ‖y‖² on this prompt (a 5-token variance is too small to
    # normalise by). Layer 11 is far off on ordinary tokens (its held-out NMSE is dominated by a few
    # massive-activation positions; see the model card), so the bar is on the median layer.
    errors = []
    for layer in range(ts.n_layers):
        y = values.outputs[layer][0, 1:]
        errors.append(float((recon[layer] - y).pow(2).sum() / y.pow(2).sum()))
        assert 0 < float((acts[layer] != 0).sum(-1).float().mean()) <= 128, layer
    assert sorted(errors)[len(errors) // 2] < 0.45, errors  # random or broken weights are >= 1
    assert sum(e < 0.6 for e in errors) >= 28, errors
    out = tmp_path / "france.safetensors"
    result = CliRunner().invoke(
        app, ["attribute", "The capital of France is", "-o", str(out), "--max-feature-nodes", "64"]
    )
    assert result.exit_code == 0, result.output
    graph = Graph.load(out)
    assert graph.target_labels[0] == " Paris" and graph.n_features == 64
