"""Turning raw package files into clean English paragraphs.

Registry packages carry text in many shapes (CSV inside zips, POS-tagged tokens, wikitext, OSIS
markup, dictionary entries). Extractors reduce each to *documents*: plain text whose paragraphs
are separated by a blank line. The helpers here are shared by the extractors; they are
deliberately simple regular-expression cleaners, since the goal is training text for activation
statistics, not a faithful rendering.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator


def paragraphs(text: str, min_words: int = 1) -> str:
    """Collapse whitespace in paragraphs; keep those of ``min_words``+ words, blank-line separated."""
    parts = (re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in parts if len(p.split()) >= min_words)


def split_long(text: str, max_words: int = 1500) -> Iterator[str]:
    """Cut a long document (a speech, a chapter) at paragraph boundaries into ~1k-word pieces.

    Shorter pieces shuffle better: one novel does not fill a whole training batch.
    """
    if len(text.split()) <= max_words:
        yield text
        return
    current: list[str] = []
    n_words = 0
    for para in text.split("\n\n"):
        current.append(para)
        n_words += len(para.split())
        if n_words >= max_words * 2 // 3:
            yield "\n\n".join(current)
            current, n_words = [], 0
    if current:
        yield "\n\n".join(current)


def fingerprint(text: str) -> bytes:
    """Key for exact-duplicate removal: case and whitespace do not make a document new."""
    normalised = " ".join(text.lower().split())
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


def wikitext_to_text(text: str) -> str:
    """MediaWiki markup -> paragraphs (templates, tables, refs, links and headings removed)."""
    for _ in range(4):  # nested templates
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\{\|.*?\|\}", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->|<[^>]+>", "", text, flags=re.S)
    text = re.sub(r"\[\[(File|Image|Category|[a-z\-]{2,12}):[^\[\]]*(\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://[^\s\]]*\s?([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^[=*#:;|!].*$", "", text, flags=re.M)
    return paragraphs(html.unescape(text), 6)


def strip_markup(text: str) -> str:
    """XML/OSIS-like markup -> paragraphs: notes dropped, block tags become paragraph breaks."""
    text = re.sub(r"<note[^>]*>.*?</note>", " ", text, flags=re.S)
    text = re.sub(r"<(lb|p|div|l|lg)\b[^>]*/?>", "\n\n", text)
    text = re.sub(r"<[^>]+>", " ", text)
    return paragraphs(html.unescape(text))


def untag_brown(text: str) -> str:
    """Brown corpus ``word/tag`` tokens -> plain sentences with normal punctuation spacing."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        s = " ".join(tok.rsplit("/", 1)[0] for tok in para.split())
        s = re.sub(r" ([.,;:!?)'])", r"\1", s)
        s = s.replace("( ", "(").replace("`` ", '"').replace(" ''", '"').replace(";;", ";")
        if s:
            out.append(s)
    return "\n\n".join(out)
