"""A tiny model and transcoder set saved to disk: a Ray worker (another process) loads them by path."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as hf

from tests.factories.models import tiny_config, tiny_tokenizer
from tracewire.batch import AttributionSettings
from tracewire.transcoders.io import save_transcoders
from tracewire.transcoders.synthetic import random_plt

PROMPTS = [
    "The capital of France is",
    "The capital of Texas is",
    "Paris is the capital of",
    "Austin is",
    "The capital is",
    "France is",
]


def save_tiny_assets(root: Path) -> AttributionSettings:
    """Write ``root/model`` (tiny random Llama + tokenizer), ``root/tc``; settings loading them."""
    torch.manual_seed(0)
    model = hf.AutoModelForCausalLM.from_config(tiny_config("llama"))
    with torch.no_grad():  # weights large enough that attention and norms are far from trivial
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    save_transcoders(random_plt(3, 16, 24, activation="relu", skip=True), root / "tc")
    return AttributionSettings(
        model=str(root / "model"),
        transcoders=str(root / "tc"),
        device="cpu",
        threads=1,
        max_n_logits=3,
        batch_size=8,
    )


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path
