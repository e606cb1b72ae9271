"""Every adapter row resolves real modules on a tiny model of its architecture."""

from __future__ import annotations

import pytest

from tests.factories.models import ARCHS, tiny_model
from tracewire.models.adapters import ADAPTERS, SITES


@pytest.mark.parametrize("arch", ARCHS)
def test_row_resolves_every_module(arch: str) -> None:
    lm = tiny_model(arch)
    row = lm.adapter
    assert row.n_layers(lm.model) == 3
    assert row.embed_module(lm.model).weight.shape[1] == lm.d_model
    assert row.unembedding_matrix(lm.model).shape == (lm.d_model, lm.vocab_size)
    for layer in range(3):
        norms = row.norm_modules(lm.model, layer)
        assert {"pre_attn", "pre_mlp"} <= set(norms)
        assert ("post_mlp" in norms) == arch.startswith("gemma")
        for norm in norms.values():
            assert row.norm_eps(norm) > 0
        for site in SITES:
            module, side = row.site_module(lm.model, layer, site)
            assert side in ("input", "output") and module is not None
    softcap = row.logit_softcap(lm.config)
    assert (softcap is not None) == (arch == "gemma2")


def test_table_has_one_row_per_architecture() -> None:
    types = [t for row in ADAPTERS for t in row.model_types]
    assert len(types) == len(set(types))
    assert {row.name for row in ADAPTERS} == {"llama", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2"}


def test_unknown_site() -> None:
    lm = tiny_model("llama")
    with pytest.raises(ValueError, match="unknown site"):
        lm.adapter.site_module(lm.model, 0, "attn_out")
