"""``TokenCorpus``: the read side of a built corpus, shared by training and dashboards.

Shards are memory-mapped, so opening a 20M-token corpus costs nothing and a window reads only its
own bytes. A *window* of length ``seq_len`` is the model's BOS followed by the next ``seq_len - 1``
stored tokens; window ``i`` starts at stored token ``i * (seq_len - 1)``. Windows therefore tile the
corpus without overlap, in a fixed order (the documents were shuffled once, at build time), which
is what makes training data positions resumable and dashboards reproducible.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tracewire.corpus.build import DOCUMENTS, FORMAT, MANIFEST, TOKENIZER_DIR
from tracewire.corpus.packages import CorpusError
from tracewire.errors import InvalidArgumentError
from tracewire.limits import read_json_object, require_regular_file

_SHARD_NAME = re.compile(r"^tokens-\d{5,}\.npy$")
_MANIFEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "shards": list,
    "sources": list,
    "n_tokens": int,
    "n_documents": int,
    "vocab_size": int,
    "bos_token_id": int,
    "model": str,
}


def _field(entry: Any, key: str, kind: type | tuple[type, ...], path: Path, prefix: str = "") -> Any:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise CorpusError(f"{path}: field '{prefix}{key}' is {value!r}; expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {list: "a list", int: "a non-negative integer", str: "a string"}
    return " or ".join(names.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))


def _read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json``, with the fields the reader relies on checked (never trusted blindly)."""
    manifest = read_json_object(path, what="corpus manifest", error=CorpusError)
    if manifest.get("format") != FORMAT:
        raise CorpusError(f"{path}: field 'format' is {manifest.get('format')!r}, expected {FORMAT!r}")
    for key, kind in _MANIFEST_FIELDS.items():
        _field(manifest, key, kind, path)
    for number, source in enumerate(manifest["sources"]):
        _field(source, "name", str, path, f"sources[{number}].")
    return manifest


def _load_npy(path: Path, what: str) -> np.ndarray:
    """A memory-mapped ``.npy`` (regular files only: a FIFO would block ``np.load`` forever)."""
    require_regular_file(path, what=what, error=CorpusError)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy header parsing raises ValueError, SyntaxError, TokenError, ...
        raise CorpusError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from exc


class TokenCorpus:
    """A tokenized corpus directory written by :func:`tracewire.corpus.build_corpus`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        path = self.directory / MANIFEST
        if not path.exists():
            raise CorpusError(f"{path}: no corpus manifest (build one with 'tracewire corpus build')")
        self.manifest: dict[str, Any] = _read_manifest(path)
        self._shards: list[np.ndarray] = []
        self._starts: list[int] = []
        position = 0
        for number, entry in enumerate(self.manifest["shards"]):
            shard_path = self.directory / _field(entry, "file", str, path, f"shards[{number}].")
            declared = _field(entry, "n_tokens", int, path, f"shards[{number}].")
            if not _SHARD_NAME.match(shard_path.name) or shard_path.parent != self.directory:
                raise CorpusError(f"{path}: shards[{number}].file {entry['file']!r} is not a shard name")
            array = _load_npy(shard_path, "token shard")
            if array.dtype != np.uint32 or array.ndim != 1 or array.size != declared:
                raise CorpusError(
                    f"{shard_path}: expected {declared} uint32 tokens, "
                    f"found {array.size} {array.dtype} of shape {array.shape}"
                )
            self._shards.append(array)
            self._starts.append(position)
            position += array.size
        self.n_tokens = position
        self._check_consistency(path)

    def _check_consistency(self, path: Path) -> None:
        """Totals, token ids and the document table agree with the manifest (cheap on mmaps)."""
        manifest = self.manifest
        if manifest["n_tokens"] != self.n_tokens:
            raise CorpusError(
                f"{path}: field 'n_tokens' is {manifest['n_tokens']}; the shards hold {self.n_tokens}"
            )
        vocab = manifest["vocab_size"]
        for shard_path, array in zip((e["file"] for e in manifest["shards"]), self._shards):
            if array.size and int(array.max()) >= vocab:
                raise CorpusError(
                    f"{self.directory / shard_path}: token id {int(array.max())} >= vocab_size {vocab}"
                )
        if not 0 <= manifest["bos_token_id"] < vocab:
            raise CorpusError(f"{path}: bos_token_id {manifest['bos_token_id']} outside the vocabulary")
        documents = _load_npy(self.directory / DOCUMENTS, "document table")
        n_docs = manifest["n_documents"]
        if documents.dtype != np.int64 or documents.shape != (n_docs, 3):
            raise CorpusError(
                f"{self.directory / DOCUMENTS}: expected int64 [{n_docs}, 3] (n_documents of the manifest), "
                f"found {documents.dtype} {documents.shape}"
            )
        if n_docs and (
            int(documents[:, 0].min()) < 0
            or int(documents[:, 0].max()) >= max(self.n_tokens, 1)
            or int(documents[:, 2].min()) < 0
            or int(documents[:, 2].max()) >= len(manifest["sources"])
        ):
            raise CorpusError(
                f"{self.directory / DOCUMENTS}: token offsets or source indices outside the corpus"
            )
        self.__dict__["documents"] = documents  # the cached_property, already read and checked

    # ----------------------------------------------------------------- facts

    @property
    def bos_token_id(self) -> int:
        return int(self.manifest["bos_token_id"])

    @property
    def model_name(self) -> str:
        return str(self.manifest["model"])

    @property
    def source_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["sources"]]

    @cached_property
    def documents(self) -> np.ndarray:
        """``[n_docs, 3]`` int64: (first token, token count, source index); read and checked on open."""
        return _load_npy(self.directory / DOCUMENTS, "document table")

    def source_at(self, position: int) -> str:
        """Name of the source whose document holds stored token ``position``."""
        starts = self.documents[:, 0]
        doc = int(np.searchsorted(starts, position, side="right")) - 1
        return self.source_names[int(self.documents[doc, 2])]

    # ----------------------------------------------------------------- tokens and windows

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Stored tokens ``[start, stop)`` as a uint32 array (copied out of the shards)."""
        if not 0 <= start <= stop <= self.n_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside the corpus [0, {self.n_tokens})")
        pieces = []
        shard = max(0, bisect.bisect_right(self._starts, start) - 1)
        while start < stop:
            local = start - self._starts[shard]
            take = min(stop - start, self._shards[shard].size - local)
            pieces.append(np.asarray(self._shards[shard][local : local + take]))
            start += take
            shard += 1
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint32)

    def n_windows(self, seq_len: int) -> int:
        """How many whole windows of ``seq_len`` tokens (BOS included) the corpus holds."""
        if seq_len < 2:
            raise InvalidArgumentError(f"seq_len must be >= 2 (BOS + at least one token), got {seq_len}")
        return self.n_tokens // (seq_len - 1)

    def window(self, index: int, seq_len: int) -> Tensor:
        """Window ``index``: LongTensor ``[seq_len]`` starting with BOS."""
        return self.batch([index], seq_len)[0]

    def batch(self, indices: Sequence[int], seq_len: int) -> Tensor:
        """Windows ``indices`` stacked: LongTensor ``[len(indices), seq_len]``."""
        n = self.n_windows(seq_len)
        out = np.empty((len(indices), seq_len), dtype=np.int64)
        out[:, 0] = self.bos_token_id
        for row, index in enumerate(indices):
            if not 0 <= index < n:
                raise IndexError(f"window {index} out of range: the corpus has {n} windows of {seq_len}")
            start = index * (seq_len - 1)
            out[row, 1:] = self.tokens(start, start + seq_len - 1)
        return torch.from_numpy(out)

    def windows(
        self, seq_len: int, *, batch_size: int = 1, start: int = 0, stop: int | None = None
    ) -> Iterator[Tensor]:
        """Windows ``start .. stop-1`` in order, as LongTensors ``[batch_size, seq_len]`` (the last may be
        smaller)."""
        end = self.n_windows(seq_len) if stop is None else min(stop, self.n_windows(seq_len))
        for first in range(start, end, batch_size):
            yield self.batch(range(first, min(first + batch_size, end)), seq_len)

    # ----------------------------------------------------------------- text

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.directory / TOKENIZER_DIR), local_files_only=True)

    def text_of(self, tokens: Tensor | np.ndarray | Sequence[int]) -> str:
        """Decode token ids (e.g. a window) back to text with the corpus's tokenizer."""
        if isinstance(tokens, Tensor):
            ids = [int(t) for t in tokens.reshape(-1).tolist()]
        else:
            ids = [int(t) for t in np.asarray(tokens).reshape(-1).tolist()]
        return str(self.tokenizer.decode(ids))

    def __repr__(self) -> str:
        return f"TokenCorpus({str(self.directory)!r}, n_tokens={self.n_tokens}, model={self.model_name!r})"
