"""The embedded model, for real (slow: converts the GGUF once, ~20 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tracewire.models.loading import embedded_gguf_path, load_model
from tracewire.replacement.model import ReplacementModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracewire-cache")


def test_smollm2_paris_and_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWIRE_CACHE", str(cache))
    first = load_model("smollm2-135m")
    assert first.info["cached"] is False and first.info["convert_seconds"] > 0
    assert (cache / "models" / "smollm2-135m" / "model.safetensors").exists()
    second = load_model("smollm2-135m")
    assert second.info["cached"] is True
    assert second.load_seconds < first.load_seconds / 3
    assert second.adapter.name == "llama" and second.n_layers == 30 and second.d_model == 576
    assert second.bos_token_id == 0

    ids = second.encode("The capital of France is")
    assert ids[0].item() == 0
    with torch.no_grad():
        logits = second.model(ids[None]).logits[0, -1]
    probs = logits.softmax(-1)
    top = int(probs.argmax())
    assert second.tokenizer.decode([top]) == " Paris"
    assert probs[top].item() > 0.6

    run = ReplacementModel(second).record(ids)  # the frozen forward is the real forward
    assert (run.logits[0, -1] - logits).abs().max().item() <= 1e-4


def test_gguf_file_path_uses_the_same_machinery(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWIRE_CACHE", str(cache))
    gguf = embedded_gguf_path()
    loaded = load_model(gguf)
    assert loaded.adapter.name == "llama" and loaded.bos_token_id == 0
    again = load_model(gguf)
    assert again.info["cached"] is True
