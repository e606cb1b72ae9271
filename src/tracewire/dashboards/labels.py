"""The automatic feature label: a short, transparent summary of what fires it and what it promotes.

It is deliberately a fixed heuristic, not a model: a researcher can predict it from the card and
knows how far to trust it. For a feature that fired at least once:

1. **Input side.** Weight the centre token of each top-activating example by its activation.
   Take tokens in decreasing weight while each holds at least 15% of the total, at most 3, and
   stop as soon as they cover half of it. Covering half: ``"Paris"/"London"``; some tokens but
   less than half: ``"Paris"/…``; no token reaching 15%: ``(varied)``.
2. **Output side.** The two highest top logits (decoder direction through the unembedding),
   distinct after display normalisation: ``"France"/"French"``.
3. The label is ``input → output``, cut to 60 characters.

A feature that never fired in the sample is labelled ``(never fired in N tokens)``. Tokens are
shown stripped of surrounding whitespace, with newlines as ``⏎`` and whitespace-only tokens as
``␣``. A user label (``FeatureStore.set_label``) always overrides this one.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_LENGTH = 60
MIN_SHARE = 0.15
COVER = 0.5
MAX_INPUT_TOKENS = 3
N_OUTPUT_TOKENS = 2


def display_token(text: str) -> str:
    """A token as it appears in a label."""
    shown = text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    if not shown:
        return "∅"
    if not shown.strip():
        return "␣"
    return shown.strip()


def auto_label(
    center_tokens: Sequence[str],
    center_activations: Sequence[float],
    top_logits: Sequence[str],
    *,
    activation_count: int,
    n_tokens: int,
) -> str:
    """The automatic label (rules in the module docstring)."""
    if activation_count == 0:
        return f"(never fired in {n_tokens:,} tokens)"
    weights: dict[str, float] = {}
    for token, activation in zip(center_tokens, center_activations):
        shown = display_token(token)
        weights[shown] = weights.get(shown, 0.0) + max(float(activation), 0.0)
    total = sum(weights.values())
    chosen: list[str] = []
    covered = 0.0
    ranked = sorted(weights.items(), key=lambda item: -item[1])  # stable: ties keep first-seen order
    for token, weight in ranked[:MAX_INPUT_TOKENS]:
        if total <= 0 or weight / total < MIN_SHARE:
            break
        chosen.append(token)
        covered += weight
        if covered / total >= COVER:
            break
    quoted = "/".join(f'"{t}"' for t in chosen)
    if not chosen:
        source = "(varied)"
    elif covered / total >= COVER:
        source = quoted
    else:
        source = quoted + "/…"
    outputs: list[str] = []
    for token in top_logits:
        shown = display_token(token)
        if shown not in outputs:
            outputs.append(shown)
        if len(outputs) == N_OUTPUT_TOKENS:
            break
    label = f"{source} → " + "/".join(f'"{t}"' for t in outputs) if outputs else source
    return label if len(label) <= MAX_LENGTH else label[: MAX_LENGTH - 1] + "…"
