"""The CLI end to end on a tiny model saved as a Hugging Face folder: corpus build -> train -> eval."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.corpus.fixtures import write_text_dir
from tests.factories.models import tiny_model
from tracewire.cli.main import app
from tracewire.transcoders import load_transcoders


def test_corpus_build_train_eval(tmp_path):
    loaded = tiny_model("llama", n_layers=3, d_model=16)
    model_dir = tmp_path / "model"
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    texts = write_text_dir(tmp_path / "texts", n_files=30, words=120)
    runner = CliRunner()

    result = runner.invoke(app, ["corpus", "build", "-o", str(tmp_path / "corpus"), "--model", str(model_dir),
                                 "--local", str(texts), "--raw-dir", str(tmp_path / "raw")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "local:texts" in result.output

    out = tmp_path / "tc"
    args = ["train", "-o", str(out), "--model", str(model_dir), "--corpus", str(tmp_path / "corpus"),
            "--kind", "skip-plt", "--activation", "relu", "--features", "24", "--tokens", "1200",
            "--seq-len", "16", "--batch", "8", "--checkpoint-every", "3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out NMSE" in result.output
    ts = load_transcoders(out, n_layers=3, d_model=16)
    assert ts.has_skip and ts.d_transcoder == 24 and ts.activation_name == "relu"
    report = json.loads((out / "training.json").read_text())
    assert report["config"]["features"] == 24 and report["steps"] == 10

    corpus = str(tmp_path / "corpus")
    args = ["eval-transcoders", "--model", str(model_dir), "-t", str(out), "--corpus", corpus,
            "--windows", "4", "--seq-len", "16"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "CE recovered" in result.output
    assert (out / "eval.png").stat().st_size > 0
    assert json.loads((out / "eval.json").read_text())["windows"]["count"] == 4

    result = runner.invoke(app, ["train", "-o", str(out), "--kind", "nope", "--model", str(model_dir)])
    assert result.exit_code != 0 and "kind" in result.output
