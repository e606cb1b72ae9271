"""The prompts file of a batch: plain text (one prompt a line) or JSONL (one object a line).

A JSONL line is ``{"prompt": str, "targets": [str | int, ...], "budget": int, "slug": str}``;
only ``prompt`` is required. The slug names the graph file (``DIR/graphs/{slug}.safetensors``),
so it must be unique and safe as a file name; a missing slug is made from the line number and
the prompt's first words, which is stable across re-runs of the same file (what resuming needs).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracewire.errors import InvalidArgumentError

_SLUG_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KEYS = {"prompt", "targets", "budget", "slug"}


@dataclass(frozen=True)
class PromptJob:
    """One prompt of a batch, with what its attribution run needs beyond the shared settings."""

    slug: str
    prompt: str
    targets: list[str | int] | None = None
    budget: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"slug": self.slug, "prompt": self.prompt, "targets": self.targets, "budget": self.budget}


def default_slug(index: int, prompt: str) -> str:
    """``0007-the-capital-of`` : the 0-based line index and up to four words of the prompt."""
    words = re.findall(r"[A-Za-z0-9]+", prompt.lower())[:4]
    return "-".join([f"{index:04d}", *words])


def read_prompts(path: str | os.PathLike[str]) -> list[PromptJob]:
    """Parse a prompts file; JSONL when the first non-blank line starts with ``{``.

    Raises InvalidArgumentError naming the file, line and field for a malformed line, a duplicate
    or unsafe slug, or an empty file.
    """
    name = os.fspath(path)
    if not Path(name).is_file():
        raise InvalidArgumentError(f"prompts file {name} does not exist")
    lines = Path(name).read_text(encoding="utf-8").splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise InvalidArgumentError(f"prompts file {name} has no prompts (expected one a line, or JSONL)")
    jsonl = numbered[0][1].lstrip().startswith("{")
    jobs = [
        _parse_json_line(name, number, line, index) if jsonl else PromptJob(default_slug(index, line), line)
        for index, (number, line) in enumerate(numbered)
    ]
    seen: dict[str, int] = {}
    for (number, _), job in zip(numbered, jobs):
        if job.slug in seen:
            raise InvalidArgumentError(
                f"{name}:{number}: slug {job.slug!r} already used on line {seen[job.slug]}; slugs name "
                "graph files and must be unique"
            )
        seen[job.slug] = number
    return jobs


def _parse_json_line(name: str, number: int, line: str, index: int) -> PromptJob:
    where = f"{name}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{where}: not valid JSON ({exc}); expected one object a line") from exc
    if not isinstance(record, dict):
        raise InvalidArgumentError(f"{where}: a JSONL line must be an object, got {type(record).__name__}")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidArgumentError(f"{where}: field 'prompt' is {prompt!r}; expected a non-empty string")
    targets = record.get("targets")
    if targets is not None and (
        not isinstance(targets, list)
        or not targets
        or not all(isinstance(t, str | int) and not isinstance(t, bool) for t in targets)
    ):
        raise InvalidArgumentError(
            f"{where}: field 'targets' is {targets!r}; expected a non-empty list of token strings or ids"
        )
    budget = record.get("budget")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        raise InvalidArgumentError(f"{where}: field 'budget' is {budget!r}; expected an integer >= 1")
    slug = record.get("slug", default_slug(index, prompt))
    if not isinstance(slug, str) or not _SLUG_SAFE.match(slug):
        raise InvalidArgumentError(
            f"{where}: field 'slug' is {slug!r}; expected 1-128 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    extra = {key: value for key, value in record.items() if key not in _KEYS}
    return PromptJob(slug=slug, prompt=prompt, targets=targets, budget=budget, extra=extra)
