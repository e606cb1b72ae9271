"""Local-vs-hub resolution, through the real huggingface_hub call sites (download functions faked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories.transcoders import random_set
from tracewire.errors import TranscoderFormatError
from tracewire.transcoders import load_transcoders, save_transcoders
from tracewire.transcoders.sources import resolve_source


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A hub whose snapshot of any repo is ``tmp_path / 'snapshot'``; records the calls."""
    calls: dict[str, Any] = {"root": tmp_path / "snapshot"}

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls["snapshot"] = (repo_id, kwargs)
        return str(calls["root"])

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.setdefault("files", []).append((repo_id, filename, kwargs))
        return str(calls["root"] / filename)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hf_hub_download)
    monkeypatch.chdir(tmp_path)  # so that 'owner/repo' is not an existing local path
    return calls


def test_hub_reference_with_subfolder_and_revision(fake_hub: dict[str, Any]) -> None:
    ts = random_set("clt")
    save_transcoders(ts, fake_hub["root"] / "clt-set")
    loaded = load_transcoders("owner/repo/clt-set@v1")
    repo_id, kwargs = fake_hub["snapshot"]
    assert repo_id == "owner/repo" and kwargs["revision"] == "v1"
    assert kwargs["allow_patterns"] == ["clt-set/*"]
    assert kwargs["etag_timeout"] <= 10
    assert loaded.config.scan == "owner/repo//clt-set@v1"  # identifier when config.yaml has no scan


def test_hub_reference_keeps_config_scan(fake_hub: dict[str, Any]) -> None:
    save_transcoders(random_set("plt", scan="my-scan"), fake_hub["root"])
    assert load_transcoders("owner/repo").config.scan == "my-scan"
    assert fake_hub["snapshot"][1]["revision"] is None


def test_hub_reference_missing_subfolder(fake_hub: dict[str, Any]) -> None:
    fake_hub["root"].mkdir()
    with pytest.raises(TranscoderFormatError, match="has no folder 'nope'"):
        resolve_source("owner/repo/nope")


def test_hf_uris_in_transcoders_list(fake_hub: dict[str, Any], tmp_path: Path) -> None:
    ts = random_set("plt", n_layers=2)
    save_transcoders(ts, fake_hub["root"] / "weights")
    local = tmp_path / "local-config"
    local.mkdir()
    config = yaml.safe_load((fake_hub["root"] / "weights" / "config.yaml").read_text())
    config["transcoders"] = [f"hf://owner/repo/weights/layer_{i}.safetensors?revision=abc" for i in range(2)]
    (local / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_transcoders(local)
    assert loaded.config == ts.config
    assert [(r, f, kw["revision"]) for r, f, kw in fake_hub["files"]] == [
        ("owner/repo", "weights/layer_0.safetensors", "abc"),
        ("owner/repo", "weights/layer_1.safetensors", "abc"),
    ]


def test_unreachable_hub_is_one_clear_error(
    fake_hub: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(repo_id: str, **kwargs: Any) -> str:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.snapshot_download", unreachable)
    with pytest.raises(TranscoderFormatError, match="hub could not be reached") as info:
        load_transcoders("owner/repo")
    assert "ConnectionError" in str(info.value) and "local directory" in str(info.value)


def test_existing_local_path_wins_over_hub_shape(fake_hub: dict[str, Any], tmp_path: Path) -> None:
    save_transcoders(random_set("plt"), tmp_path / "owner" / "repo")
    load_transcoders("owner/repo")
    assert "snapshot" not in fake_hub


def test_a_file_is_not_a_set(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(TranscoderFormatError, match="expected a directory"):
        load_transcoders(tmp_path / "weights.bin")
