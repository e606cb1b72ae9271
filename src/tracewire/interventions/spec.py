"""What an intervention says: which feature, where, and what to do with its activation.

An :class:`Intervention` names a transcoder feature by (source layer, position, feature id) and
an operation on its activation: ``set`` it to a value, ``scale`` it by a factor (``0`` ablates,
negative factors inhibit as in the attribution-graph paper), or ``add`` a value (steering).

Positions are indices into the full token sequence, BOS included (what ``LoadedModel.encode``
returns and what graph nodes use). A position may be

- an ``int`` (negative counts from the end of the *prompt*: ``-1`` is the last prompt token);
- a ``slice``: ``slice(k, None)`` is *open-ended* — in generation it keeps applying to every
  generated token from position ``k`` on; ``slice(None)`` is every position;
- a sequence of ints.

circuit-tracer's 4-tuples ``(layer, position, feature, value)`` are accepted wherever a list of
interventions is, and mean ``set``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from tracewire.errors import InvalidArgumentError

Operation = Literal["set", "scale", "add"]
OPERATIONS: tuple[str, ...] = ("set", "scale", "add")
Position = int | slice | tuple[int, ...]


@dataclass(frozen=True)
class Intervention:
    """Change feature ``feature`` of source layer ``layer`` at ``position`` (see module doc)."""

    layer: int
    position: Position
    feature: int
    op: Operation = "set"
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise InvalidArgumentError(
                f"intervention op must be one of {', '.join(OPERATIONS)}, got {self.op!r}"
            )
        for name in ("layer", "feature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"intervention {name} must be an int, got {value!r}")
        if not isinstance(self.value, (int, float)) or not math.isfinite(float(self.value)):
            raise InvalidArgumentError(f"intervention value must be a finite number, got {self.value!r}")
        position = self.position
        if isinstance(position, list):
            object.__setattr__(self, "position", tuple(position))
            position = self.position
        if isinstance(position, slice):
            for part in ("start", "stop", "step"):
                bound = getattr(position, part)
                if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
                    raise InvalidArgumentError(
                        f"intervention position slice {part} must be an int or None, got {bound!r}"
                    )
            if position.step is not None and position.step < 1:
                raise InvalidArgumentError(
                    f"intervention position slice step must be >= 1, got {position.step}"
                )
        elif isinstance(position, tuple):
            if not position or not all(isinstance(p, int) and not isinstance(p, bool) for p in position):
                raise InvalidArgumentError(
                    f"intervention positions must be a non-empty sequence of ints, got {position!r}"
                )
        elif isinstance(position, bool) or not isinstance(position, int):
            raise InvalidArgumentError(
                f"intervention position must be an int, a slice or ints, got {position!r}"
            )

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def set_to(cls, layer: int, position: Position, feature: int, value: float) -> Intervention:
        """Clamp the activation to ``value`` (it may switch an inactive feature on)."""
        return cls(layer, position, feature, "set", float(value))

    @classmethod
    def scale_by(cls, layer: int, position: Position, feature: int, factor: float) -> Intervention:
        """Multiply the activation by ``factor`` (an inactive feature stays off)."""
        return cls(layer, position, feature, "scale", float(factor))

    @classmethod
    def ablate(cls, layer: int, position: Position, feature: int) -> Intervention:
        """Scale by 0."""
        return cls(layer, position, feature, "scale", 0.0)

    @classmethod
    def add(cls, layer: int, position: Position, feature: int, amount: float) -> Intervention:
        """Add ``amount`` to the activation (steering)."""
        return cls(layer, position, feature, "add", float(amount))

    # -- semantics -------------------------------------------------------------------------------
    @property
    def open_ended(self) -> bool:
        """True for a slice without a stop: it applies to generated tokens as well."""
        return isinstance(self.position, slice) and self.position.stop is None

    def apply(self, current: torch.Tensor) -> torch.Tensor:
        """The new activations given the current ones (any shape)."""
        if self.op == "set":
            return torch.full_like(current, self.value)
        if self.op == "scale":
            return current * self.value
        return current + self.value

    def positions(self, start: int, length: int, n_prompt: int) -> list[int]:
        """Indices (relative to ``start``) of the positions ``[start, start + length)`` it applies to.

        Negative ints and slice bounds count from the end of the prompt (``n_prompt`` tokens).
        """

        def absolute(index: int) -> int:
            return index + n_prompt if index < 0 else index

        end = start + length
        position = self.position
        if isinstance(position, slice):
            first = 0 if position.start is None else max(0, absolute(position.start))
            stop = end if position.stop is None else min(end, absolute(position.stop))
            step = position.step or 1
            lo = max(first, start)
            lo += (first - lo) % step
            return [p - start for p in range(lo, stop, step)]
        items = (position,) if isinstance(position, int) else position
        return sorted({absolute(p) - start for p in items if start <= absolute(p) < end})

    def describe(self) -> str:
        """``L3 @pos 5 f12 set 4.0``: for logs and CLI output."""
        return f"L{self.layer} @pos {format_position(self.position)} f{self.feature} {self.op} {self.value:g}"


def format_position(position: Position) -> str:
    if isinstance(position, slice):
        start = "" if position.start is None else position.start
        stop = "" if position.stop is None else position.stop
        text = f"{start}:{stop}"
        return text + (f":{position.step}" if position.step not in (None, 1) else "")
    if isinstance(position, tuple):
        return ",".join(str(p) for p in position)
    return str(position)


InterventionLike = Intervention | tuple[int, Position, int, float]


def as_interventions(items: Iterable[InterventionLike]) -> list[Intervention]:
    """Normalise a list of :class:`Intervention` and circuit-tracer 4-tuples (which mean ``set``)."""
    out: list[Intervention] = []
    for i, item in enumerate(items):
        if isinstance(item, Intervention):
            out.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 4:
            layer, position, feature, value = item
            out.append(Intervention(int(layer), position, int(feature), "set", float(value)))
        else:
            raise InvalidArgumentError(
                f"intervention #{i} is {item!r}; expected an Intervention or a "
                "(layer, position, feature, value) tuple"
            )
    return out


def check_interventions(
    interventions: Sequence[Intervention],
    *,
    n_layers: int,
    d_transcoder: int,
    n_positions: int,
    n_prompt: int,
) -> None:
    """Raise ValueError naming the first intervention that points outside the model or sequence.

    ``n_positions`` is how long the sequence may get (the prompt, plus generated tokens).
    """
    for item in interventions:
        where = f"intervention {item.describe()}"
        if not 0 <= item.layer < n_layers:
            raise InvalidArgumentError(f"{where}: layer {item.layer} is outside 0..{n_layers - 1}")
        if not 0 <= item.feature < d_transcoder:
            raise InvalidArgumentError(f"{where}: feature {item.feature} is outside 0..{d_transcoder - 1}")
        items: tuple[int, ...] = ()
        if isinstance(item.position, int):
            items = (item.position,)
        elif isinstance(item.position, tuple):
            items = item.position
        for p in items:
            absolute = p + n_prompt if p < 0 else p
            if not 0 <= absolute < n_positions:
                raise InvalidArgumentError(
                    f"{where}: position {p} is outside the sequence ({n_positions} positions: "
                    f"0..{n_positions - 1}, or -{n_prompt}..-1 from the end of the prompt)"
                )
        closed = isinstance(item.position, slice) and not item.open_ended
        if closed and not item.positions(0, n_positions, n_prompt):
            raise InvalidArgumentError(
                f"{where}: the slice selects no position of the {n_positions}-position sequence"
            )


def parse_intervention(text: str, op: Operation) -> Intervention:
    """Parse the CLI form ``L:POS:FEAT=VALUE`` (``L:POS:FEAT`` for ablations, ``op='scale'``, value 0).

    ``POS``: an int (``-1`` = last prompt token), ``a:b``, ``k:`` (k onward, incl. generated
    tokens), ``*`` (every position) or ``a,b,c``. Example: ``--scale 3:5::12=0``.
    """
    lhs, eq, rhs = text.partition("=")
    parts = lhs.split(":")
    hint = f"{text!r}: expected LAYER:POSITION:FEATURE=VALUE, e.g. 3:-1:120=5.0 or 3:4::120=0"
    if len(parts) < 3:
        raise InvalidArgumentError(hint)
    try:
        layer, feature = int(parts[0]), int(parts[-1])
        position = _parse_position(":".join(parts[1:-1]))
        if eq:
            value = float(rhs)
        elif op == "scale":
            value = 0.0
        else:
            raise InvalidArgumentError("missing =VALUE")
        return Intervention(layer, position, feature, op, value)
    except ValueError as exc:
        raise InvalidArgumentError(f"{hint} ({exc})") from exc


def _parse_position(text: str) -> Position:
    text = text.strip()
    if text in ("*", ":"):
        return slice(None)
    if ":" in text:
        pieces = text.split(":")
        if len(pieces) > 3:
            raise InvalidArgumentError(f"bad position slice {text!r}")
        bounds = [int(p) if p.strip() else None for p in pieces]
        return slice(*bounds)
    if "," in text:
        return tuple(int(p) for p in text.split(","))
    return int(text)
