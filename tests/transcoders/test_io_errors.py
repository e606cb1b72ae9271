"""Every malformed input raises TranscoderFormatError naming the file and the tensor or field."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.factories.transcoders import random_set
from tracewire.errors import TranscoderFormatError
from tracewire.transcoders import load_transcoders, save_transcoders


@pytest.fixture
def plt_dir(tmp_path: Path) -> Path:
    return save_transcoders(random_set("plt", n_layers=3, d_model=8, d_tc=16), tmp_path / "plt")


@pytest.fixture
def clt_dir(tmp_path: Path) -> Path:
    return save_transcoders(random_set("clt", n_layers=3, d_model=8, d_tc=16), tmp_path / "clt")


def edit_tensors(path: Path, **changes: torch.Tensor | None) -> None:
    tensors = load_file(path)
    for name, value in changes.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    save_file(tensors, path)


def edit_config(directory: Path, **changes: object) -> None:
    path = directory / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config))


def load_error(source: Path | str, **kwargs: object) -> str:
    with pytest.raises(TranscoderFormatError) as info:
        load_transcoders(source, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_missing_tensor(plt_dir: Path) -> None:
    edit_tensors(plt_dir / "layer_1.safetensors", b_enc=None)
    message = load_error(plt_dir)
    assert "layer_1.safetensors" in message and "missing tensor 'b_enc'" in message


def test_missing_tensor_lazy_decoder(plt_dir: Path) -> None:
    edit_tensors(plt_dir / "layer_2.safetensors", W_dec=None)
    message = load_error(plt_dir, lazy_decoder=True)
    assert "layer_2.safetensors" in message and "missing tensor 'W_dec'" in message


def test_missing_clt_decoder_tensor(clt_dir: Path) -> None:
    edit_tensors(clt_dir / "W_dec_1.safetensors", W_dec_1=None, W_dec=torch.zeros(16, 2, 8))
    message = load_error(clt_dir)
    assert "W_dec_1.safetensors" in message and "missing tensor 'W_dec_1'" in message


def test_wrong_d_model(plt_dir: Path) -> None:
    message = load_error(plt_dir, d_model=12)
    assert "layer_0.safetensors, tensor 'W_enc'" in message
    assert "shape (16, 8), expected (16, 12)" in message and "d_model argument" in message


def test_layer_count_mismatch(plt_dir: Path) -> None:
    message = load_error(plt_dir, n_layers=4)
    assert "layer count mismatch" in message and "missing: layer_3.safetensors" in message
    message = load_error(plt_dir, n_layers=2)
    assert "unexpected: layer_2.safetensors" in message
    (plt_dir / "layer_1.safetensors").unlink()
    assert "missing: layer_1.safetensors" in load_error(plt_dir)


def test_clt_layer_count_mismatch(clt_dir: Path) -> None:
    (clt_dir / "W_dec_2.safetensors").unlink()
    assert "missing: W_dec_2.safetensors" in load_error(clt_dir)
    assert "missing: W_enc_3.safetensors" in load_error(clt_dir, n_layers=4)


def test_inconsistent_shapes(plt_dir: Path) -> None:
    edit_tensors(plt_dir / "layer_1.safetensors", W_dec=torch.zeros(15, 8))
    message = load_error(plt_dir)
    assert "layer_1.safetensors, tensor 'W_dec'" in message and "(15, 8), expected (16, 8)" in message


def test_clt_decoder_shape(clt_dir: Path) -> None:
    edit_tensors(clt_dir / "W_dec_0.safetensors", W_dec_0=torch.zeros(16, 2, 8))
    message = load_error(clt_dir)
    assert "W_dec_0.safetensors, tensor 'W_dec_0'" in message
    assert "expected (16, 3, 8) = [d_transcoder, n_layers - 0, d_model]" in message


def test_skip_in_some_layers_only(tmp_path: Path) -> None:
    directory = save_transcoders(random_set("skip-plt"), tmp_path)
    edit_tensors(directory / "layer_1.safetensors", W_skip=None)
    message = load_error(directory)
    assert "layer_1.safetensors, tensor 'W_skip': missing" in message


def test_non_floating_dtype(plt_dir: Path) -> None:
    edit_tensors(plt_dir / "layer_0.safetensors", W_enc=torch.zeros(16, 8, dtype=torch.int32))
    message = load_error(plt_dir)
    assert "layer_0.safetensors, tensor 'W_enc'" in message and "int32 is not floating point" in message


def test_truncated_file(plt_dir: Path) -> None:
    path = plt_dir / "layer_2.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = load_error(plt_dir)
    assert "layer_2.safetensors" in message and "truncated" in message


def test_truncated_lazy_decoder_file(clt_dir: Path) -> None:
    path = clt_dir / "W_dec_1.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    message = load_error(clt_dir, lazy_decoder=True)
    assert "W_dec_1.safetensors" in message and "truncated" in message


def test_bad_yaml(plt_dir: Path) -> None:
    (plt_dir / "config.yaml").write_text("model_kind: transcoder_set\nfeature_input_hook: [mlp.hook_in\n")
    message = load_error(plt_dir)
    assert "config.yaml, line" in message and "invalid YAML" in message


def test_unknown_activation(plt_dir: Path) -> None:
    edit_config(plt_dir, activation="gelu")
    message = load_error(plt_dir)
    assert "config.yaml" in message and "field 'activation' is 'gelu'" in message and "jumprelu" in message


def test_unknown_model_kind(plt_dir: Path) -> None:
    edit_config(plt_dir, model_kind="sparse_autoencoder")
    message = load_error(plt_dir)
    assert "config.yaml" in message and "'model_kind'" in message and "sparse_autoencoder" in message


def test_unknown_hook(plt_dir: Path) -> None:
    edit_config(plt_dir, feature_output_hook="attn.hook_z")
    message = load_error(plt_dir)
    assert "config.yaml" in message and "unknown output hook 'attn.hook_z'" in message
    assert "hook_mlp_out" in message


def test_missing_hook_field(plt_dir: Path) -> None:
    config = yaml.safe_load((plt_dir / "config.yaml").read_text())
    del config["feature_input_hook"]
    (plt_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert "missing field 'feature_input_hook'" in load_error(plt_dir)


def test_topk_k_problems(tmp_path: Path) -> None:
    save_transcoders(random_set("plt", activation="topk", k=4), tmp_path)
    edit_config(tmp_path, k=5)
    message = load_error(tmp_path)
    assert "layer_0.safetensors, tensor 'k': 4 disagrees with k=5" in message
    save_transcoders(random_set("clt", activation="topk", k=4), tmp_path / "clt")
    config = yaml.safe_load((tmp_path / "clt" / "config.yaml").read_text())
    del config["k"]
    (tmp_path / "clt" / "config.yaml").write_text(yaml.safe_dump(config))
    assert "no field 'k'" in load_error(tmp_path / "clt")


def test_missing_jumprelu_threshold_in_one_layer(plt_dir: Path) -> None:
    edit_tensors(plt_dir / "layer_1.safetensors", **{"activation_function.threshold": None})
    message = load_error(plt_dir)
    assert "layer_1.safetensors, tensor 'activation_function.threshold': missing" in message


def test_explicit_relu_ignores_thresholds(plt_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    edit_config(plt_dir, activation="relu")
    ts = load_transcoders(plt_dir)
    assert ts.activation_name == "relu"
    assert "ignoring the threshold" in caplog.text


def test_directory_without_config(plt_dir: Path) -> None:
    (plt_dir / "config.yaml").unlink()
    assert "no config.yaml" in load_error(plt_dir)


def test_no_such_directory(tmp_path: Path) -> None:
    message = load_error(tmp_path / "absent")
    assert "no such directory" in message and "absent" in message
    assert "no such directory" in load_error("not-a-dir")


def test_hub_reference_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    message = load_error("someone/tiny-transcoders/plt@main")
    assert time.perf_counter() - start < 5
    assert "'someone/tiny-transcoders/plt@main'" in message
    assert "hub could not be reached" in message and "HF_HUB_OFFLINE" in message
    assert "local directory" in message
