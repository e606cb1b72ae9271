"""A feature card as terminal text (``tracewire feature L F``).

Example windows show every token; tokens where the feature fired are highlighted: with colour, a
background whose intensity follows the activation (relative to the feature's maximum) and the
example's own token in bold; without colour (``color=False``, a pipe, ``NO_COLOR``), active tokens
are wrapped in ``[...]`` and the example's token in ``[[...]]``.
"""

from __future__ import annotations

from tracewire.dashboards.card import Example, FeatureCard
from tracewire.dashboards.labels import display_token

# Background colours (xterm-256) from faint to strong orange, and the reset sequence.
_SHADES = (230, 223, 222, 215, 214, 208, 202)
_RESET = "\x1b[0m"
_SPARK = "▁▂▃▄▅▆▇█"


def _token_text(token: str) -> str:
    return token.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")


def render_example(example: Example, act_max: float, *, color: bool) -> str:
    """One window on one line, active tokens highlighted."""
    pieces = []
    for i, (token, act) in enumerate(zip(example.tokens, example.acts)):
        text = _token_text(token)
        centre = i == example.center
        if act <= 0:
            pieces.append(text)
        elif color:
            level = min(len(_SHADES) - 1, int(len(_SHADES) * act / act_max)) if act_max > 0 else 0
            bold = "\x1b[1m" if centre else ""
            pieces.append(f"\x1b[48;5;{_SHADES[level]}m\x1b[38;5;16m{bold}{text}{_RESET}")
        else:
            pieces.append(f"[[{text}]]" if centre else f"[{text}]")
    return "".join(pieces)


def sparkline(counts: list[int]) -> str:
    top = max(counts) if counts else 0
    if top <= 0:
        return ""
    return "".join(_SPARK[min(len(_SPARK) - 1, (len(_SPARK) * c) // (top + 1))] if c else " " for c in counts)


def render_card(card: FeatureCard, *, color: bool = True, per_group: int = 3, top: int = 8) -> str:
    """The card as text: label, statistics, logits, histogram, top examples and quantile samples."""
    lines = []
    title = f"layer {card.layer} feature {card.feature} (index {card.index})"
    label = card.label or "(no label)"
    source = "user label" if card.user_label else "auto label"
    lines.append(f"\x1b[1m{title}\x1b[0m  {label}  [{source}]" if color else f"{title}  {label}  [{source}]")
    if card.user_label:
        lines.append(f"  auto label: {card.auto_label}")
    lines.append(
        f"  fires on {card.activation_frequency:.4%} of {card.n_tokens:,} tokens "
        f"({card.activation_count:,}x); "
        f"act min {card.act_min:.3g}  mean {card.act_mean:.3g}  max {card.act_max:.3g}"
    )
    if card.top_logits:
        lines.append(
            "  top logits:    " + "  ".join(f"{display_token(t)} {v:+.2f}" for t, v in card.top_logits)
        )
        lines.append(
            "  bottom logits: " + "  ".join(f"{display_token(t)} {v:+.2f}" for t, v in card.bottom_logits)
        )
    if card.activation_count:
        lines.append(f"  histogram [{card.act_min:.3g} .. {card.act_max:.3g}]: |{sparkline(card.histogram)}|")
    for g, group in enumerate(card.groups):
        limit = top if g == 0 else per_group
        if not group.examples:
            continue
        lines.append(f"  {group.name} ({group.lower:.3g} .. {group.upper:.3g}):")
        for example in group.examples[:limit]:
            lines.append(
                f"    {example.activation:8.3f}  {render_example(example, card.act_max, color=color)}"
            )
    return "\n".join(lines)
