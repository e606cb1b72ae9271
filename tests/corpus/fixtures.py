"""Small corpora made by the tests: text files in the tiny tokenizer's vocabulary (no downloads)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.factories.models import VOCAB, WORDS, tiny_tokenizer
from tracewire.corpus import Package, RawPackages, Source, TokenCorpus, build_corpus, local_source

VOCAB_WORDS = WORDS[2:] + [f"w{i}" for i in range(len(WORDS), VOCAB)]


def random_text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(VOCAB_WORDS) for _ in range(n_words)]
    return "\n\n".join(" ".join(words[i : i + 12]) for i in range(0, n_words, 12))


def write_text_dir(directory: Path, n_files: int = 12, words: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (directory / f"doc{i:03d}.txt").write_text(random_text(rng, words + rng.randrange(words)))
    return directory


def memory_source(name: str, texts: Sequence[str], licence: str = "test licence") -> Source:
    """A source 'plugin' whose extractor yields in-memory texts (no packages to fetch)."""

    def extract(_raw: RawPackages, _packages: Sequence[Package]) -> Iterator[str]:
        yield from texts

    return Source(name, licence, extract, description=f"{len(texts)} in-memory texts")


def build_fixture_corpus(
    tmp: Path, *, n_files: int = 40, words: int = 120, tokens: int | None = None
) -> TokenCorpus:
    text_dir = write_text_dir(tmp / "texts", n_files=n_files, words=words)
    out = tmp / "corpus"
    build_corpus(
        out, tokenizer=tiny_tokenizer(), bos_token_id=0, model_name="tiny", sources=[local_source(text_dir)],
        tokens=tokens, raw_dir=tmp / "raw", fetch=False,
    )  # fmt: skip
    return TokenCorpus(out)
