"""Generation with interventions: KV cache, open-ended slices, seeds."""

from __future__ import annotations

import pytest
import torch

from tests.factories.models import random_ids
from tests.interventions.setups import engine, setup
from tracewire.interventions import Intervention, generate


@pytest.mark.parametrize(
    ("arch", "kind"), [("llama", "plt"), ("gemma2", "clt"), ("gemma3", "skip"), ("gpt2", "skip")]
)
def test_no_interventions_equals_plain_greedy_generation(arch: str, kind: str) -> None:
    lm, ts = setup(arch, kind, "relu")
    ids = random_ids(6, seed=1)
    out = generate(lm, ts, ids, [], max_new_tokens=8)
    with torch.no_grad():
        # attention_mask: the BOS id is also some tiny configs' pad id, which generate would mask
        plain = lm.model.generate(
            ids[None], attention_mask=torch.ones_like(ids[None]), max_new_tokens=8, do_sample=False
        )[0, 6:]
    assert out.tokens.tolist() == plain.tolist()
    assert out.logits.shape == (len(out.tokens), lm.vocab_size)


def test_sampling_is_reproducible_with_a_seed() -> None:
    e = engine("qwen2", "plt", "relu")
    clean = e.clean(random_ids(6, seed=2))
    kwargs = {"max_new_tokens": 10, "temperature": 1.5, "top_p": 0.95}
    first = e.generate(clean, [], seed=7, **kwargs)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = e.generate(clean, [], seed=7, **kwargs)
    assert torch.equal(torch.rand(1), before)  # the global RNG is left alone
    assert torch.equal(first.tokens, again.tokens)
    others = [e.generate(clean, [], seed=s, **kwargs).tokens for s in (8, 9)]
    assert any(not torch.equal(first.tokens, o) for o in others)


@pytest.mark.parametrize(("arch", "kind"), [("llama", "clt"), ("gemma2", "skip")])
def test_open_ended_slice_applies_to_generated_tokens(arch: str, kind: str) -> None:
    """With the KV cache, generation equals re-running the whole sequence with the intervention at
    every position from k on (the real model at generated tokens, live attention)."""
    e = engine(arch, kind, "relu")
    ids = random_ids(6, seed=3)
    clean = e.clean(ids)
    steer = [Intervention.add(2, slice(6, None), 5, 4.0), Intervention.set_to(1, slice(5, None), 7, 3.0)]
    settings = {"freeze_attention": False, "propagate": "model"}
    out = e.generate(clean, steer, max_new_tokens=6, **settings)
    plain = e.generate(clean, [], max_new_tokens=6)
    assert (out.logits[1:] - plain.logits[1:]).abs().max() > 0.1  # the steering did something
    seq = ids.clone()
    for step, token in enumerate(out.tokens.tolist()):
        run = e.run(e.clean(seq, prepend_bos=False), steer, keep_activations=False, **settings)
        assert torch.allclose(run.logits[-1], out.logits[step], atol=1e-4)
        assert int(run.logits[-1].argmax()) == token
        seq = torch.cat([seq, torch.tensor([token])])


def test_prompt_only_intervention_and_frozen_prefill() -> None:
    """A closed position acts in the prompt pass only; the first generated token's logits equal
    ``intervene``'s last-position logits under the same (frozen) settings."""
    e = engine("qwen3", "plt", "jumprelu")
    clean = e.clean(random_ids(6, seed=4))
    ablate = [Intervention.set_to(1, -1, 2, 5.0)]
    for settings in ({}, {"constrained_layers": range(3)}, {"freeze_attention": False}):
        out = e.generate(clean, ablate, max_new_tokens=3, **settings)
        run = e.run(clean, ablate, **settings)
        assert torch.allclose(out.logits[0], run.logits[-1], atol=1e-5)


def test_generation_arguments_are_checked() -> None:
    e = engine("llama")
    clean = e.clean(random_ids(5))
    with pytest.raises(ValueError, match="max_new_tokens"):
        e.generate(clean, [], max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        e.generate(clean, [], temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="position 9 is outside"):
        e.generate(clean, [Intervention.ablate(0, 9, 1)], max_new_tokens=2)
    e.generate(clean, [Intervention.ablate(0, 6, 1)], max_new_tokens=2)  # a generated position is fine
