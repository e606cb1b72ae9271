"""Intervention specs: positions (ints, slices, open-ended), the CLI syntax."""

from __future__ import annotations

import pytest

from tracewire.interventions.spec import Intervention, parse_intervention


def test_positions_of_ints_slices_and_lists() -> None:
    assert Intervention(0, 3, 1).positions(0, 6, 6) == [3]
    assert Intervention(0, -1, 1).positions(0, 6, 6) == [5]
    assert Intervention(0, -1, 1).positions(6, 1, 6) == []  # the last *prompt* token, not a generated one
    assert Intervention(0, slice(2, 5), 1).positions(0, 6, 6) == [2, 3, 4]
    assert Intervention(0, slice(1, None, 2), 1).positions(0, 6, 6) == [1, 3, 5]
    # open-ended: applies to decode steps (start=P+t, length 1)
    open_ended = Intervention(0, slice(4, None), 1)
    assert open_ended.open_ended
    assert [open_ended.positions(start, 1, 6) for start in (6, 7)] == [[0], [0]]
    assert Intervention(0, slice(1, None, 2), 1).positions(6, 1, 6) == []
    assert Intervention(0, slice(1, None, 2), 1).positions(7, 1, 6) == [0]
    assert Intervention(0, [4, 1, 4], 1).positions(0, 6, 6) == [1, 4]
    assert Intervention(0, slice(-2, None), 1).positions(0, 6, 6) == [4, 5]


@pytest.mark.parametrize(
    ("text", "op", "expected"),
    [
        ("3:-1:120=5.0", "set", Intervention(3, -1, 120, "set", 5.0)),
        ("3:4::12=0", "scale", Intervention(3, slice(4, None), 12, "scale", 0.0)),
        ("3:2:5:12=1.5", "add", Intervention(3, slice(2, 5), 12, "add", 1.5)),
        ("0:*:7=2", "set", Intervention(0, slice(None), 7, "set", 2.0)),
        ("1:1,3:7=2", "set", Intervention(1, (1, 3), 7, "set", 2.0)),
        ("1:2:7", "scale", Intervention(1, 2, 7, "scale", 0.0)),
    ],
)
def test_cli_syntax(text: str, op: str, expected: Intervention) -> None:
    assert parse_intervention(text, op) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["3:120=5", "a:1:2=3", "1:2:3=x", "1:2:3"])
def test_cli_syntax_errors_show_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="LAYER:POSITION:FEATURE=VALUE"):
        parse_intervention(text, "set")
