"""GemmaScope params.npz: W_enc transposed on read, threshold -> JumpReLU, default Gemma hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.factories.transcoders import write_gemmascope_layers
from tracewire.errors import TranscoderFormatError
from tracewire.transcoders import PerLayerTranscoders, load_transcoders, save_transcoders


def test_read_layer_directories(tmp_path: Path) -> None:
    arrays = write_gemmascope_layers(tmp_path, n_layers=2, d_model=8, d_tc=16)
    ts = load_transcoders(tmp_path, n_layers=2, d_model=8)
    assert isinstance(ts, PerLayerTranscoders)
    assert (ts.n_layers, ts.d_model, ts.d_transcoder, ts.activation_name) == (2, 8, 16, "jumprelu")
    assert ts.config.input_site == "mlp_in" and ts.config.output_site == "mlp_block_out"
    assert ts.W_dec is not None
    for layer, a in enumerate(arrays):
        assert torch.equal(ts.W_enc[layer], torch.from_numpy(a["W_enc"].T.copy()))
        threshold = ts.threshold(layer)
        assert threshold is not None and torch.equal(threshold, torch.from_numpy(a["threshold"]))
        assert torch.equal(ts.W_dec[layer], torch.from_numpy(a["W_dec"]))
        x = torch.randn(3, 8)
        pre = x @ torch.from_numpy(a["W_enc"]) + torch.from_numpy(a["b_enc"])
        expected = pre * (pre > torch.from_numpy(a["threshold"]))
        torch.testing.assert_close(ts.encode(layer, x), expected)


def test_read_via_config_listing_npz_files(tmp_path: Path) -> None:
    write_gemmascope_layers(tmp_path / "npz", n_layers=3)
    config = {
        "model_kind": "transcoder_set",
        "model_name": "google/gemma-2-2b",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": [f"npz/layer_{i}/params.npz" for i in range(3)],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    ts = load_transcoders(tmp_path)
    assert ts.n_layers == 3 and ts.config.model_name == "google/gemma-2-2b"
    # and it converts to the circuit-tracer layout
    save_transcoders(ts, tmp_path / "converted")
    again = load_transcoders(tmp_path / "converted")
    assert all(torch.equal(again.W_enc[i], ts.W_enc[i]) for i in range(3))


def test_wrong_d_model_mentions_transposed_storage(tmp_path: Path) -> None:
    write_gemmascope_layers(tmp_path, n_layers=1, d_model=8, d_tc=16)
    with pytest.raises(
        TranscoderFormatError, match=r"params\.npz, tensor 'W_enc' \(stored transposed"
    ) as info:
        load_transcoders(tmp_path, d_model=12)
    assert "(16, 12)" in str(info.value)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    (tmp_path / "layer_0").mkdir()
    np.savez(tmp_path / "layer_0" / "params.npz", W_enc=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(TranscoderFormatError, match=r"layer_0/params\.npz.*pickled arrays are not allowed"):
        load_transcoders(tmp_path)


def test_missing_array(tmp_path: Path) -> None:
    write_gemmascope_layers(tmp_path, n_layers=1)
    arrays = dict(np.load(tmp_path / "layer_0" / "params.npz"))
    del arrays["b_dec"]
    np.savez(tmp_path / "layer_0" / "params.npz", **arrays)
    with pytest.raises(TranscoderFormatError, match=r"layer_0/params\.npz: missing array 'b_dec'"):
        load_transcoders(tmp_path)
