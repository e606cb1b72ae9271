"""Presets (``--transcoders gemma`` ...): the right repositories and configs, the model chosen when
``--model`` is omitted, mismatches refused, and offline failures that say how to download."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.factories.models import tiny_model, tiny_tokenizer
from tests.factories.transcoders import random_set
from tests.transcoders.hub_mirror import HubMirror, hub_mirror_fixture  # noqa: F401  (fixture)
from tracewire.cli.main import app
from tracewire.errors import InvalidArgumentError, TranscoderFormatError
from tracewire.graph import Graph
from tracewire.transcoders import PerLayerTranscoders, load_transcoders, save_transcoders
from tracewire.transcoders.presets import (
    PRESETS,
    check_model_matches,
    find_preset,
    model_for_transcoders,
    preset_names,
)

#: What circuit-tracer's README and code name (repo -> model), checked one by one.
PUBLISHED = {
    "gemma": ("mntss/gemma-scope-transcoders", "google/gemma-2-2b"),
    "gemma-clt-426k": ("mntss/clt-gemma-2-2b-426k", "google/gemma-2-2b"),
    "gemma-clt-2.5m": ("mntss/clt-gemma-2-2b-2.5M", "google/gemma-2-2b"),
    "llama": ("mntss/transcoder-Llama-3.2-1B", "meta-llama/Llama-3.2-1B"),
    "llama-clt": ("mntss/clt-llama-3.2-1b-524k", "meta-llama/Llama-3.2-1B"),
    "qwen3-0.6b": ("mwhanna/qwen3-0.6b-transcoders-lowl0", "Qwen/Qwen3-0.6B"),
    "qwen3-1.7b": ("mwhanna/qwen3-1.7b-transcoders-lowl0", "Qwen/Qwen3-1.7B"),
    "qwen3-4b": ("mwhanna/qwen3-4b-transcoders", "Qwen/Qwen3-4B"),
    "qwen3-8b": ("mwhanna/qwen3-8b-transcoders", "Qwen/Qwen3-8B"),
    "qwen3-14b": ("mwhanna/qwen3-14b-transcoders-lowl0", "Qwen/Qwen3-14B"),
}


def test_table_names_the_published_sets():
    assert {p.name: (p.repo, p.model) for p in PRESETS if p.package is None} == PUBLISHED
    assert find_preset("GEMMA") is find_preset("gemma-2-2b") is find_preset("gemma")
    assert find_preset("qwen3") is find_preset("qwen3-0.6b")
    assert find_preset("gemma-clt") is find_preset("gemma-clt-426k")
    assert find_preset("owner/repo") is None and find_preset("gemmaa") is None
    assert set(PUBLISHED) <= set(preset_names())


def test_gemma_resolves_through_the_config_and_its_hf_uris(hub_mirror: HubMirror):
    arrays = hub_mirror.add_gemmascope(n_layers=3, d_model=8, d_tc=16)
    ts = load_transcoders("gemma", n_layers=3, d_model=8)
    assert isinstance(ts, PerLayerTranscoders)
    assert ts.config.model_name == "google/gemma-2-2b" and ts.config.scan == "mntss/gemma-scope-transcoders"
    assert (ts.n_layers, ts.d_transcoder, ts.activation_name) == (3, 16, "jumprelu")
    for layer, a in enumerate(arrays):  # the listed L0 of each layer, W_enc transposed
        assert torch.equal(ts.W_enc[layer], torch.from_numpy(a["W_enc"].T.copy()))
        threshold = ts.threshold(layer)
        assert threshold is not None and torch.equal(threshold, torch.from_numpy(a["threshold"]))


def test_llama_preset_end_to_end_with_the_model_from_a_local_folder(hub_mirror: HubMirror, tmp_path: Path):
    loaded = tiny_model("llama")
    model_dir = tmp_path / "tiny-llama"
    loaded.model.save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    skip_set = random_set("skip-plt", n_layers=3, d_model=16, model_name="meta-llama/Llama-3.2-1B")
    staged = tmp_path / "staged"
    save_transcoders(skip_set, staged)
    hub_mirror.add_folder("mntss/transcoder-Llama-3.2-1B", staged)

    ts = load_transcoders("llama")
    assert ts.config.scan == "mntss/transcoder-Llama-3.2-1B" and ts.config.has_skip
    assert all(torch.equal(ts.W_enc[i], skip_set.W_enc[i]) for i in range(3))

    out = tmp_path / "g.safetensors"
    result = CliRunner().invoke(
        app, ["attribute", "The capital of France is", "-m", str(model_dir), "-t", "llama", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    graph = Graph.load(out)
    assert graph.metadata["scan"] == "mntss/transcoder-Llama-3.2-1B" and graph.n_features > 0


def test_model_is_the_presets_when_omitted(hub_mirror: HubMirror):
    assert model_for_transcoders("gemma", None, default="smollm2-135m") == "google/gemma-2-2b"
    assert model_for_transcoders("qwen3", None, default="smollm2-135m") == "Qwen/Qwen3-0.6B"
    assert model_for_transcoders("some/dir", None, default="smollm2-135m") == "smollm2-135m"
    assert model_for_transcoders("gemma", "google/gemma-2-2b-it", default="x") == "google/gemma-2-2b-it"
    hub_mirror.add_gemmascope(n_layers=2, d_model=8, d_tc=16)
    # the CLI picks google/gemma-2-2b; offline and not cached, the model load names it
    result = CliRunner().invoke(app, ["attribute", "x", "-t", "gemma", "-o", "g.safetensors"])
    assert result.exit_code == 2 and "google/gemma-2-2b" in result.output


def test_model_preset_mismatch_is_refused_before_loading(hub_mirror: HubMirror, tmp_path: Path):
    gemma = find_preset("gemma")
    assert gemma is not None
    with pytest.raises(
        InvalidArgumentError, match=r"trained on google/gemma-2-2b, but --model is 'smollm2-135m'"
    ):
        check_model_matches(gemma, "smollm2-135m")
    llama = find_preset("llama")
    assert llama is not None
    with pytest.raises(InvalidArgumentError, match=r"trained on meta-llama/Llama-3\.2-1B"):
        check_model_matches(llama, "google/gemma-2-2b")
    gemma_dir = tmp_path / "tiny-gemma"
    tiny_model("gemma2").model.config.save_pretrained(gemma_dir)
    with pytest.raises(InvalidArgumentError, match="a local 'gemma2' model"):
        check_model_matches(llama, str(gemma_dir))
    check_model_matches(gemma, str(gemma_dir))  # a local gemma2 folder is fine for gemma
    check_model_matches(gemma, "google/gemma-2-2b-it")

    start = time.perf_counter()
    result = CliRunner().invoke(
        app, ["attribute", "x", "-m", "google/gemma-2-2b", "-t", "llama", "-o", "g.st"]
    )
    assert result.exit_code == 2
    assert "'llama' (mntss/transcoder-Llama-3.2-1B) was trained on meta-llama/Llama-3.2-1B" in result.output
    result = CliRunner().invoke(
        app, ["intervene", "x", "-m", "smollm2-135m", "-t", "qwen3", "--ablate", "0:1:2"]
    )
    assert result.exit_code == 2 and "Qwen/Qwen3-0.6B" in result.output
    assert time.perf_counter() - start < 30  # refused before any model is loaded


def test_offline_preset_fails_fast_with_repo_and_download_command(hub_mirror: HubMirror):
    start = time.perf_counter()
    with pytest.raises(TranscoderFormatError) as caught:
        load_transcoders("qwen3-4b")
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert "mwhanna/qwen3-4b-transcoders" in message and "Qwen/Qwen3-4B" in message
    assert "hf download mwhanna/qwen3-4b-transcoders" in message and "HF_HUB_OFFLINE" in message


def test_a_local_folder_named_like_a_preset_wins(hub_mirror: HubMirror):
    save_transcoders(random_set("plt", n_layers=2), Path("gemma"))
    assert load_transcoders("gemma").n_layers == 2
    assert model_for_transcoders("gemma", None, default="smollm2-135m") == "smollm2-135m"


def test_presets_command_lists_them():
    result = CliRunner().invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    for name, (repo, model) in PUBLISHED.items():
        assert any(name in line and repo in line and model in line for line in result.output.splitlines())
