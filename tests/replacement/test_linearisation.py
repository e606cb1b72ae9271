"""The local replacement model: exact forward, linear backward (every adapter row, fp32)."""

from __future__ import annotations

import pytest
import torch

from tests.factories.models import ARCHS, random_ids, tiny_model
from tracewire.replacement.model import ReplacementModel

N_POS = 9


def _jacobian(run, unembed: torch.Tensor, vocab: int) -> list[torch.Tensor]:
    """d logit[last, v] / d (embeddings, each MLP output), the logit read as attribution reads it:
    final residual · W_U[:, v], before any softcap (Gemma-2's softcap is outside the linear model)."""
    logit = run.final_resid[0, -1] @ unembed[:, vocab]
    inputs = [run.embeddings, *(run.outputs[layer] for layer in sorted(run.outputs))]
    grads = torch.autograd.grad(logit, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]


@pytest.mark.parametrize("arch", ARCHS)
def test_frozen_forward_equals_original(arch: str) -> None:
    lm = tiny_model(arch)
    ids = random_ids(N_POS)
    with torch.no_grad():
        reference = lm.model(ids[None]).logits
    run = ReplacementModel(lm).record(ids)
    assert (run.logits - reference).abs().max().item() <= 1e-6
    # ...and the model is restored afterwards: a plain forward still gives the same logits.
    with torch.no_grad():
        again = lm.model(ids[None]).logits
    assert torch.equal(again, reference)


@pytest.mark.parametrize("arch", ARCHS)
def test_jacobian_does_not_depend_on_the_prompt_under_a_freeze(arch: str) -> None:
    lm = tiny_model(arch)
    rm = ReplacementModel(lm)
    prompt_a = random_ids(N_POS, seed=1)
    prompt_b = prompt_a.clone()
    prompt_b[3:7] = random_ids(N_POS, seed=2)[3:7]  # token-perturbed prompt
    unembed = lm.adapter.unembedding_matrix(lm.model)
    state_a = rm.record(prompt_a).state
    jac_a = _jacobian(rm.replay(state_a, tokens=prompt_a), unembed, 5)
    jac_b = _jacobian(rm.replay(state_a, tokens=prompt_b), unembed, 5)
    for ga, gb in zip(jac_a, jac_b):
        assert torch.allclose(ga, gb, atol=1e-6, rtol=0)
    # The record run's own backward is the same linear map.
    jac_record = _jacobian(rm.record(prompt_a), unembed, 5)
    for ga, gr in zip(jac_a, jac_record):
        assert torch.allclose(ga, gr, atol=1e-5, rtol=1e-4)
    # Sanity: a freeze taken from prompt B is a different map (so this test can fail).
    jac_own_b = _jacobian(rm.record(prompt_b), unembed, 5)
    assert max((x - y).abs().max().item() for x, y in zip(jac_a, jac_own_b)) > 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_second_derivatives_vanish(arch: str) -> None:
    lm = tiny_model(arch)
    run = ReplacementModel(lm).record(random_ids(N_POS, seed=3))
    inputs = [run.embeddings, *(run.outputs[layer] for layer in sorted(run.outputs))]
    logit = run.final_resid[0, -1] @ lm.adapter.unembedding_matrix(lm.model)[:, 7]
    grads = torch.autograd.grad(logit, inputs, create_graph=True, allow_unused=True)
    g = torch.Generator().manual_seed(0)
    probe = sum((gr * torch.randn(gr.shape, generator=g)).sum() for gr in grads if gr is not None)
    if not isinstance(probe, torch.Tensor) or not probe.requires_grad:
        return  # the gradient does not depend on any input at all: every second derivative is 0
    second = torch.autograd.grad(probe, inputs, allow_unused=True)
    for s in second:
        if s is not None:
            assert s.abs().max().item() < 1e-6


@pytest.mark.parametrize("arch", ARCHS)
def test_replay_is_linear_and_its_gradient_is_exact(arch: str) -> None:
    """Independent check of the frozen backward: f(e + δ) − f(e) == ⟨∇f, δ⟩ for the replay."""
    lm = tiny_model(arch)
    rm = ReplacementModel(lm)
    ids = random_ids(N_POS, seed=4)
    state = rm.record(ids).state
    base = rm.replay(state, tokens=ids)
    emb = base.embeddings.detach()
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(emb.shape, generator=g)
    leaf = emb.clone().requires_grad_(True)
    run = rm.replay(state, embeddings=leaf)
    unembed = lm.adapter.unembedding_matrix(lm.model)[:, 11]
    logit = run.final_resid[0, -1] @ unembed
    (grad,) = torch.autograd.grad(logit, leaf)
    with torch.no_grad():
        moved = rm.replay(state, embeddings=emb + delta).final_resid[0, -1] @ unembed
    predicted = (grad * delta).sum()
    assert torch.allclose(moved - logit.detach(), predicted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_prefix_replay_and_early_stop(arch: str) -> None:
    """Replaying a prefix gives the same site values as the full run (causality)."""
    lm = tiny_model(arch)
    rm = ReplacementModel(lm)
    ids = random_ids(N_POS, seed=5)
    full = rm.record(ids)
    part = rm.replay(full.state, length=5, batch=3, stop_after_layer=1)
    assert part.logits is None and set(part.transcoder_inputs) == {0, 1}
    assert part.embeddings.shape[:2] == (3, 5)
    for layer in (0, 1):
        want = full.transcoder_inputs[layer][0, :5].detach()
        got = part.transcoder_inputs[layer].detach()
        assert torch.allclose(got, want.expand_as(got), atol=1e-5)
