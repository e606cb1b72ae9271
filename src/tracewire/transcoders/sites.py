"""The vocabulary of places in a transformer block that a transcoder reads from and writes to.

Transcoder configs name their sites with TransformerLens hook names (``mlp.hook_in``,
``hook_mlp_out``, ...) because that is the vocabulary researchers and circuit-tracer's hub repos
already use. tracewire hooks Hugging Face modules directly, so it needs a smaller, unambiguous set
of *site* names; this module is the single translation table between the two.

Input sites (what the transcoder encodes):

- ``resid_mid``: the residual stream after attention, before the MLP's pre-norm.
- ``mlp_in``: the MLP's own input, i.e. after the pre-MLP norm.

Output sites (what the transcoder reconstructs):

- ``mlp_out``: the MLP module's output.
- ``mlp_block_out``: what the MLP block adds to the residual stream; differs from ``mlp_out`` only
  in architectures with a post-MLP norm (Gemma 2/3), where it is taken after that norm.
"""

from __future__ import annotations

import re

from tracewire.errors import TranscoderFormatError

INPUT_SITES: tuple[str, ...] = ("resid_mid", "mlp_in")
OUTPUT_SITES: tuple[str, ...] = ("mlp_out", "mlp_block_out")

_INPUT_HOOKS: dict[str, str] = {
    "hook_resid_mid": "resid_mid",
    "ln2.hook_normalized": "mlp_in",
    "mlp.hook_in": "mlp_in",
    "hook_mlp_in": "mlp_in",
}
_OUTPUT_HOOKS: dict[str, str] = {
    "hook_mlp_out": "mlp_block_out",
    "mlp.hook_out": "mlp_out",
}
# The hook name written to configs for each site: the spelling circuit-tracer's hub repos use.
_CANONICAL_INPUT_HOOK: dict[str, str] = {"resid_mid": "hook_resid_mid", "mlp_in": "mlp.hook_in"}
_CANONICAL_OUTPUT_HOOK: dict[str, str] = {"mlp_out": "mlp.hook_out", "mlp_block_out": "hook_mlp_out"}

_BLOCK_PREFIX = re.compile(r"^blocks\.\d+\.")


def _strip_block_prefix(name: str) -> str:
    """``blocks.3.mlp.hook_in`` and ``mlp.hook_in`` name the same site (the layer comes from elsewhere)."""
    return _BLOCK_PREFIX.sub("", name.strip())


def _lookup(name: str, table: dict[str, str], sites: tuple[str, ...], role: str) -> str:
    key = _strip_block_prefix(name)
    if key in table:
        return table[key]
    if key in sites:
        return key
    known = ", ".join([*table, *sites])
    raise TranscoderFormatError(
        f"unknown {role} hook {name!r}; known {role} hooks "
        f"(optionally prefixed with 'blocks.{{layer}}.'): {known}"
    )


def input_site(name: str) -> str:
    """tracewire input site (``resid_mid`` | ``mlp_in``) for a config's ``feature_input_hook``."""
    return _lookup(name, _INPUT_HOOKS, INPUT_SITES, "input")


def output_site(name: str) -> str:
    """tracewire output site (``mlp_out`` | ``mlp_block_out``) for a config's ``feature_output_hook``."""
    return _lookup(name, _OUTPUT_HOOKS, OUTPUT_SITES, "output")


def input_hook(site: str) -> str:
    """Canonical TransformerLens hook name to write in a config for an input site (or hook name)."""
    return _CANONICAL_INPUT_HOOK[input_site(site)]


def output_hook(site: str) -> str:
    """Canonical TransformerLens hook name to write in a config for an output site (or hook name)."""
    return _CANONICAL_OUTPUT_HOOK[output_site(site)]
