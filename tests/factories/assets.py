"""A tiny random model and tiny transcoders written to disk, as a user passes them to the CLI
(``tracewire attribute -m MODEL_DIR -t TRANSCODER_DIR``) or to ``tracewire serve``."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as hf

from tests.factories.models import tiny_config, tiny_tokenizer
from tracewire.transcoders.io import save_transcoders
from tracewire.transcoders.synthetic import random_plt


def write_tiny_model_and_transcoders(root: Path) -> tuple[Path, Path]:
    """``root/model`` (a 3-layer llama with the tiny tokenizer) and ``root/tc``; the same every call."""
    torch.manual_seed(0)
    model = hf.AutoModelForCausalLM.from_config(tiny_config("llama"))
    model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    save_transcoders(random_plt(3, 16, 24, activation="relu", skip=True), root / "tc")
    return root / "model", root / "tc"
