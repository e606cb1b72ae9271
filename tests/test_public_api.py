"""The top-level API: what the README uses is exported, nothing internal is, and every name resolves."""

from __future__ import annotations

import re
from pathlib import Path

import tracewire

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_exported_name_resolves_to_its_object() -> None:
    for name in tracewire.__all__:
        value = getattr(tracewire, name)
        assert value is not None
        if name != "__version__":
            assert getattr(value, "__name__", name) == name


def test_readme_api_is_exported_at_the_top_level() -> None:
    text = README.read_text()
    used = set(re.findall(r"\btracewire\.([A-Za-z_]\w*)\(", text))
    used |= {
        name.strip()
        for line in re.findall(r"from tracewire\.graph import ([\w, ]+)", text)
        for name in line.split(",")
    }
    assert {"load_model", "load_transcoders", "attribute", "intervene"} <= used
    assert used <= set(tracewire.__all__), used - set(tracewire.__all__)


def test_internals_are_not_exported() -> None:
    for name in ("FrozenState", "Adapter", "adapter_for"):
        assert name not in tracewire.__all__
        assert not hasattr(tracewire, name)
