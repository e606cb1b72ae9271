"""A local Hugging Face cache holding tiny stand-ins of published transcoder repositories.

The layout is huggingface_hub's own (``models--OWNER--NAME/refs/main`` naming a commit,
``snapshots/COMMIT/...`` holding the files), so with ``HF_HUB_OFFLINE=1`` the real
``snapshot_download`` / ``hf_hub_download`` find them exactly as they would find a real download.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.factories.transcoders import write_gemmascope_layers


class HubMirror:
    def __init__(self, cache: Path) -> None:
        self.cache = cache

    def snapshot(self, repo: str) -> Path:
        """The snapshot folder of ``repo`` (created, with refs/main pointing at it)."""
        repo_dir = self.cache / ("models--" + repo.replace("/", "--"))
        commit = hashlib.sha1(repo.encode()).hexdigest()
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(commit)
        folder = repo_dir / "snapshots" / commit
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def add_folder(self, repo: str, source: Path) -> Path:
        folder = self.snapshot(repo)
        shutil.copytree(source, folder, dirs_exist_ok=True)
        return folder

    def add_gemmascope(self, *, n_layers: int, d_model: int, d_tc: int) -> list[dict[str, np.ndarray]]:
        """mntss/gemma-scope-transcoders (a config.yaml of hf:// URIs) and the npz files it lists."""
        l0s = [76 - 5 * layer for layer in range(n_layers)]  # one L0 per layer, as in the real config
        weights = self.snapshot("google/gemma-scope-2b-pt-transcoders")
        staging = weights.parent / "staging"
        arrays = write_gemmascope_layers(staging, n_layers=n_layers, d_model=d_model, d_tc=d_tc, seed=5)
        for layer, l0 in enumerate(l0s):
            target = weights / f"layer_{layer}" / "width_16k" / f"average_l0_{l0}"
            target.mkdir(parents=True)
            shutil.move(staging / f"layer_{layer}" / "params.npz", target / "params.npz")
        shutil.rmtree(staging)
        # a distractor: another L0 of layer 0 that the config does not list
        other = weights / "layer_0" / "width_16k" / "average_l0_999"
        other.mkdir(parents=True)
        np.savez(other / "params.npz", **{k: v * 0 for k, v in arrays[0].items()})
        config = {
            "model_kind": "transcoder_set",
            "model_name": "google/gemma-2-2b",
            "feature_input_hook": "ln2.hook_normalized",
            "feature_output_hook": "hook_mlp_out",
            "transcoders": [
                f"hf://google/gemma-scope-2b-pt-transcoders/layer_{layer}/width_16k/average_l0_{l0}/params.npz"
                for layer, l0 in enumerate(l0s)
            ],
        }
        (self.snapshot("mntss/gemma-scope-transcoders") / "config.yaml").write_text(yaml.safe_dump(config))
        return arrays


@pytest.fixture(name="hub_mirror")
def hub_mirror_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubMirror:
    """An offline hub cache under tmp_path (HF_HUB_OFFLINE=1; cwd moved so no name is a local path)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return HubMirror(cache)
