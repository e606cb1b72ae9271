"""load_model: local folders, hub ids offline, aliases, BOS policy, clear errors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import torch
import transformers as hf

from tests.factories.models import tiny_config, tiny_model, tiny_tokenizer
from tracewire.errors import ModelLoadError, UnsupportedArchitectureError
from tracewire.models.adapters import adapter_for
from tracewire.models.loading import load_model
from tracewire.models.tokens import choose_bos_token_id


@pytest.fixture()
def tiny_folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = hf.AutoModelForCausalLM.from_config(tiny_config("llama"))
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_local_folder_loads_with_adapter_and_bos(tiny_folder: Path) -> None:
    loaded = load_model(tiny_folder)
    assert loaded.adapter.name == "llama"
    assert loaded.n_layers == 3 and loaded.d_model == 16
    assert loaded.bos_token_id == 0  # <|endoftext|> is in the vocabulary
    ids = loaded.encode("The capital of France is")
    assert ids.tolist() == [0, 2, 3, 4, 5, 6]
    assert loaded.encode(ids).tolist() == ids.tolist()  # BOS is never doubled
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_relative_folder_path(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_folder.parent)
    assert load_model("tiny-llama").adapter.name == "llama"


def test_bf16_load(tiny_folder: Path) -> None:
    assert load_model(tiny_folder, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_folder_without_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(tmp_path)


def test_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="local folder"):
        load_model("some-owner/some-model-that-is-not-cached")
    assert time.perf_counter() - start < 10
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("some-owner/some-model-that-is-not-cached")


def test_offline_error_says_why_the_cache_load_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.INFO, "tracewire.models.loading"), pytest.raises(ModelLoadError) as info:
        load_model("some-owner/some-model-that-is-not-cached")
    logged = [r for r in caplog.records if "local Hugging Face cache" in r.getMessage()]
    assert len(logged) == 1
    reason = str(logged[0].args[1])  # e.g. "OSError: some-owner/... is not a local folder ..."
    assert reason.split(":")[0].endswith("Error") and f"({reason})" in str(info.value)


def test_unresolvable_spec() -> None:
    with pytest.raises(ModelLoadError, match="cannot resolve"):
        load_model("not a model at all")


def test_unsupported_architecture_is_named() -> None:
    config = hf.MistralConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    with pytest.raises(UnsupportedArchitectureError, match="mistral"):
        adapter_for(config)


def test_single_token_lookup() -> None:
    loaded = tiny_model("llama")
    assert loaded.token_id("Paris") == 7
    with pytest.raises(ValueError, match="not a single token"):
        loaded.token_id("Paris Texas")


class _Tok:
    """A stand-in tokenizer for the BOS policy's branches."""

    def __init__(
        self, vocab: dict[str, int], bos: int | None, adds_bos: bool, eos: int | None = None
    ) -> None:
        self.vocab, self.bos_token_id, self.adds_bos, self.eos_token_id = vocab, bos, adds_bos, eos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [5]
        return {"input_ids": ([self.bos_token_id, *ids] if add_special_tokens and self.adds_bos else ids)}

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


def test_bos_policy() -> None:
    assert choose_bos_token_id(_Tok({"<bos>": 2}, bos=2, adds_bos=True)) == 2  # Gemma / Llama-3
    assert (
        choose_bos_token_id(_Tok({"<|endoftext|>": 0, "<|im_start|>": 1}, bos=1, adds_bos=False)) == 0
    )  # SmolLM2
    assert choose_bos_token_id(_Tok({"<s>": 1}, bos=1, adds_bos=False)) == 1
    assert choose_bos_token_id(_Tok({}, bos=None, adds_bos=False, eos=3)) == 3
    assert choose_bos_token_id(None) is None
