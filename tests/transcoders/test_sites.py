"""TransformerLens hook names <-> tracewire sites."""

from __future__ import annotations

import pytest

from tracewire.errors import TranscoderFormatError
from tracewire.transcoders.sites import (
    INPUT_SITES,
    OUTPUT_SITES,
    input_hook,
    input_site,
    output_hook,
    output_site,
)


@pytest.mark.parametrize(
    ("hook", "site"),
    [
        ("hook_resid_mid", "resid_mid"),
        ("ln2.hook_normalized", "mlp_in"),
        ("mlp.hook_in", "mlp_in"),
        ("hook_mlp_in", "mlp_in"),
        ("blocks.0.hook_resid_mid", "resid_mid"),
        ("blocks.17.ln2.hook_normalized", "mlp_in"),
        ("mlp_in", "mlp_in"),
    ],
)
def test_input_sites(hook: str, site: str) -> None:
    assert input_site(hook) == site


@pytest.mark.parametrize(
    ("hook", "site"),
    [
        ("hook_mlp_out", "mlp_block_out"),
        ("mlp.hook_out", "mlp_out"),
        ("blocks.3.hook_mlp_out", "mlp_block_out"),
        ("blocks.3.mlp.hook_out", "mlp_out"),
    ],
)
def test_output_sites(hook: str, site: str) -> None:
    assert output_site(hook) == site


def test_canonical_hooks_round_trip() -> None:
    for site in INPUT_SITES:
        assert input_site(input_hook(site)) == site
    for site in OUTPUT_SITES:
        assert output_site(output_hook(site)) == site
    assert input_hook("ln2.hook_normalized") == "mlp.hook_in"


def test_unknown_hook_lists_known_ones() -> None:
    with pytest.raises(TranscoderFormatError, match=r"unknown input hook 'attn\.hook_z'.*mlp\.hook_in"):
        input_site("attn.hook_z")
    with pytest.raises(TranscoderFormatError, match=r"unknown output hook 'mlp\.hook_in'.*hook_mlp_out"):
        output_site("mlp.hook_in")  # an input hook is not an output hook
