"""Tiny random models of every adapter row, built from configs (no downloads).

Sizes are chosen so that every code path is exercised (grouped-query attention, Gemma's
softcaps and sliding windows, GPT-2's LayerNorm and learned positions) while a full forward
takes milliseconds. A small word-level tokenizer makes string prompts work offline.
"""

from __future__ import annotations

import torch
import transformers as hf
from tokenizers import Tokenizer, models, pre_tokenizers

from tracewire.models.loading import LoadedModel, from_pretrained_model

ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2")
VOCAB = 96
WORDS = ["<|endoftext|>", "<unk>", "The", "capital", "of", "France", "is", "Paris", "Texas", "Austin"]


def tiny_config(arch: str, *, n_layers: int = 3, d_model: int = 16) -> hf.PretrainedConfig:
    common = dict(
        vocab_size=VOCAB, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers
    )
    if arch == "llama":
        return hf.LlamaConfig(
            **common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False
        )
    if arch == "qwen2":
        return hf.Qwen2Config(
            **common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False
        )
    if arch == "qwen3":
        return hf.Qwen3Config(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=4)
    if arch == "gemma2":
        return hf.Gemma2Config(
            **common, num_attention_heads=4, num_key_value_heads=2, head_dim=4, sliding_window=4
        )
    if arch == "gemma3":
        return hf.Gemma3TextConfig(
            **common, num_attention_heads=4, num_key_value_heads=2, head_dim=4, sliding_window=4
        )
    if arch == "gpt2":
        return hf.GPT2Config(
            vocab_size=VOCAB, n_embd=d_model, n_layer=n_layers, n_head=4, bos_token_id=0, eos_token_id=0
        )
    raise ValueError(arch)


def tiny_tokenizer() -> hf.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(WORDS)}
    for i in range(len(WORDS), VOCAB):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = hf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|endoftext|>"]})
    return fast


def tiny_model(
    arch: str, *, seed: int = 0, n_layers: int = 3, d_model: int = 16, dtype=torch.float32
) -> LoadedModel:
    torch.manual_seed(seed)
    model = hf.AutoModelForCausalLM.from_config(tiny_config(arch, n_layers=n_layers, d_model=d_model))
    # Random init is small; scale weights up a little so attention patterns and norms are far
    # from uniform/identity and the tests can see a missing freeze.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
            elif "norm" in name or "ln" in name:
                p.uniform_(0.5, 1.5) if arch not in ("gemma2", "gemma3") else p.uniform_(-0.5, 0.5)
    model = model.to(dtype)
    return from_pretrained_model(model, tiny_tokenizer(), name=f"tiny-{arch}")


def random_ids(n: int, *, seed: int = 0, bos: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n,), generator=g)
    ids[0] = bos
    return ids
