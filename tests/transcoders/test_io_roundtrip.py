"""save_transcoders -> load_transcoders for every kind × activation, eager and lazy decoders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.factories.transcoders import ACTIVATIONS, VARIANTS, random_inputs, random_set
from tracewire.errors import TranscoderFormatError
from tracewire.transcoders import load_transcoders, save_transcoders
from tracewire.transcoders.base import TranscoderSet

N_LAYERS, D_MODEL, D_TC = 3, 8, 16


def assert_bit_identical(a: TranscoderSet, b: TranscoderSet) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip(tmp_path: Path, variant: str, activation: str) -> None:
    ts = random_set(
        variant, n_layers=N_LAYERS, d_model=D_MODEL, d_tc=D_TC, activation=activation, scan="tiny/scan"
    )
    save_transcoders(ts, tmp_path / "a")
    loaded = load_transcoders(tmp_path / "a", n_layers=N_LAYERS, d_model=D_MODEL)
    assert type(loaded) is type(ts)
    assert loaded.config == ts.config
    assert_bit_identical(ts, loaded)

    # writing what was read gives the same bytes
    save_transcoders(loaded, tmp_path / "b")
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")

    lazy = load_transcoders(tmp_path / "a", lazy_decoder=True)
    assert lazy.lazy_decoder and lazy.W_dec is None and lazy.config == ts.config
    feats = torch.tensor([5, 0, 15, 5, 7])
    for layer in range(N_LAYERS):
        assert torch.equal(lazy.decoder_vectors(layer, feats), ts.decoder_vectors(layer, feats))
    inputs = random_inputs(N_LAYERS, D_MODEL, (4,))
    for got, want in zip(lazy.reconstruct(inputs), ts.reconstruct(inputs)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)

    # a lazily loaded set saves the same files too
    save_transcoders(lazy, tmp_path / "c")
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "c")


def test_config_yaml_is_circuit_tracer_shaped(tmp_path: Path) -> None:
    save_transcoders(random_set("skip-clt", activation="topk", k=3, scan="s"), tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config == {
        "model_kind": "cross_layer_transcoder",
        "model_name": "tiny-random",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
        "activation": "topk",
        "k": 3,
        "scan": "s",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "W_dec_0.safetensors",
        "W_dec_1.safetensors",
        "W_dec_2.safetensors",
        "W_enc_0.safetensors",
        "W_enc_1.safetensors",
        "W_enc_2.safetensors",
        "config.yaml",
    ]


def test_dtype_none_keeps_file_dtype_and_dtype_casts(tmp_path: Path) -> None:
    ts = random_set("skip-plt", dtype=torch.bfloat16)
    save_transcoders(ts, tmp_path)
    kept = load_transcoders(tmp_path, dtype=None)
    assert kept.dtype == torch.bfloat16
    assert_bit_identical(ts, kept)
    wide = load_transcoders(tmp_path, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in wide.parameters())
    assert torch.equal(wide.W_enc[1], ts.W_enc[1].double())
    lazy = load_transcoders(tmp_path, dtype=torch.float64, lazy_decoder=True)
    assert lazy.decoder_vectors(0, torch.tensor([1])).dtype == torch.float64


def test_relative_paths_and_config_file_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = random_set("plt")
    save_transcoders(ts, tmp_path / "sets" / "tiny")
    monkeypatch.chdir(tmp_path)
    assert_bit_identical(ts, load_transcoders("sets/tiny"))
    assert_bit_identical(ts, load_transcoders("./sets/tiny/config.yaml"))


def test_transcoders_list_in_config(tmp_path: Path) -> None:
    ts = random_set("plt", activation="topk", k=2)
    save_transcoders(ts, tmp_path / "weights")
    config = yaml.safe_load((tmp_path / "weights" / "config.yaml").read_text())
    config["transcoders"] = [f"weights/layer_{i}.safetensors" for i in range(ts.n_layers)]
    del config["k"]  # the per-layer 'k' tensors must supply it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = load_transcoders(tmp_path)
    assert loaded.config == ts.config
    assert_bit_identical(ts, loaded)


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = random_set("plt", seed=1)
    save_transcoders(first, tmp_path)
    before = file_bytes(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("tracewire.atomic.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_transcoders(random_set("plt", seed=2), tmp_path)
    assert file_bytes(tmp_path) == before  # nothing half-written, no temp files left behind


def test_save_refuses_stale_layer_files(tmp_path: Path) -> None:
    save_transcoders(random_set("plt", n_layers=3), tmp_path)
    with pytest.raises(TranscoderFormatError, match=r"layer_2\.safetensors"):
        save_transcoders(random_set("plt", n_layers=2), tmp_path)
    save_transcoders(random_set("plt", n_layers=3, seed=5), tmp_path)  # overwriting the same files is fine


def test_jumprelu_is_implied_by_thresholds_in_config(tmp_path: Path) -> None:
    save_transcoders(random_set("plt", activation="jumprelu"), tmp_path / "j")
    save_transcoders(random_set("plt", activation="relu"), tmp_path / "r")
    assert "activation" not in yaml.safe_load((tmp_path / "j" / "config.yaml").read_text())
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["activation"] == "relu"
    assert load_transcoders(tmp_path / "j").activation_name == "jumprelu"
