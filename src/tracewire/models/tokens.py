"""Which BOS token tracewire prepends, per model.

Attribution zeroes the first position (an attention sink that dominates every graph), so what
sits there matters for the model's predictions. The policy, in order:

1. a tokenizer that adds a BOS by itself (Llama-3 ``<|begin_of_text|>``, Gemma ``<bos>``): that BOS;
2. a vocabulary with a special ``<|endoftext|>`` token (SmolLM2 id 0, GPT-2 id 50256, Qwen): that
   token. For SmolLM2 this matters: "The capital of France is" gives " Paris" p≈0.81 with id 0
   and 0.75 with the tokenizer's nominal BOS ``<|im_start|>``; "Michael Jordan plays the sport
   of" gives " basketball" only with id 0;
3. the tokenizer's ``bos_token_id``, else its ``eos_token_id``; else no BOS.
"""

from __future__ import annotations

from typing import Any


def choose_bos_token_id(tokenizer: Any) -> int | None:
    if tokenizer is None:
        return None
    bos = getattr(tokenizer, "bos_token_id", None)
    try:
        with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
        without = tokenizer("a", add_special_tokens=False)["input_ids"]
        if bos is not None and len(with_special) > len(without) and with_special[0] == bos:
            return int(bos)
    except Exception:  # exotic tokenizers: fall through to the vocabulary rules
        pass
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if bos is not None:
        return int(bos)
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if eos is not None else None
