"""build_corpus + TokenCorpus on fixture text: dedupe, shuffle, budget, shards, windows, licences."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from tests.corpus.fixtures import memory_source, random_text, write_text_dir
from tests.factories.models import tiny_tokenizer
from tracewire.corpus import CorpusError, Source, TokenCorpus, build_corpus, local_source


def _build(tmp_path, sources, **kw):
    out = tmp_path / "corpus"
    manifest = build_corpus(
        out, tokenizer=tiny_tokenizer(), bos_token_id=0, model_name="tiny", sources=sources,
        raw_dir=tmp_path / "raw", fetch=False, **kw,
    )  # fmt: skip
    return out, manifest


def test_local_and_plugin_sources_dedupe_and_record_licences(tmp_path):
    rng = random.Random(1)
    texts = [random_text(rng, 30) for _ in range(5)]
    mine = write_text_dir(tmp_path / "mine", n_files=4, words=30)
    first = (mine / "doc000.txt").read_text()
    plugin = memory_source("plugin", [*texts, texts[0], "  " + first.upper() + "  "], licence="CC0")
    out, manifest = _build(tmp_path, [local_source(mine, licence="mine"), plugin])
    by_name = {s["name"]: s for s in manifest["sources"]}
    assert by_name["local:mine"]["documents"] == 4 and by_name["local:mine"]["licence"] == "mine"
    # texts[0] repeated and the case/whitespace variant of a local file are both dropped
    assert by_name["plugin"]["documents"] == 5 and by_name["plugin"]["duplicates_dropped"] == 2
    assert by_name["plugin"]["licence"] == "CC0"
    corpus = TokenCorpus(out)
    docs = corpus.documents
    assert docs.shape == (9, 3)
    assert corpus.n_tokens == int(docs[:, 1].sum()) == manifest["n_tokens"]
    assert np.all(docs[1:, 0] == np.cumsum(docs[:-1, 1]))  # stored back to back
    ends = docs[:, 0] + docs[:, 1] - 1  # every document is followed by the separator (= BOS)
    assert all(int(corpus.tokens(int(e), int(e) + 1)[0]) == 0 for e in ends)
    assert {corpus.source_at(int(s)) for s in docs[:, 0]} == {"local:mine", "plugin"}
    assert not list(out.glob(".*tmp"))


def test_windows_start_with_bos_tile_the_corpus_and_decode(tmp_path):
    out, _ = _build(tmp_path, [local_source(write_text_dir(tmp_path / "t", n_files=10))], shard_tokens=100)
    corpus = TokenCorpus(out)
    assert len(corpus.manifest["shards"]) > 3  # so windows cross shard boundaries
    seq = 16
    n = corpus.n_windows(seq)
    assert n == corpus.n_tokens // (seq - 1)
    allw = torch.cat(list(corpus.windows(seq, batch_size=4)))
    assert allw.shape == (n, seq) and allw.dtype == torch.long
    assert torch.all(allw[:, 0] == 0)
    stored = torch.from_numpy(corpus.tokens(0, n * (seq - 1)).astype(np.int64))
    assert torch.equal(allw[:, 1:].reshape(-1), stored)
    assert torch.equal(torch.cat(list(corpus.windows(seq, batch_size=3, start=2, stop=7))), allw[2:7])
    assert torch.equal(corpus.window(5, seq), allw[5])
    doc = corpus.documents[0]
    text = corpus.text_of(corpus.tokens(int(doc[0]), int(doc[0] + doc[1]) - 1))
    sources_text = " ".join(p.read_text() for p in (tmp_path / "t").iterdir()).split()
    assert text.split() and all(w in sources_text for w in text.split())
    with pytest.raises(IndexError, match="window"):
        corpus.window(n, seq)


def test_budget_and_shuffle_are_seeded(tmp_path):
    src = [local_source(write_text_dir(tmp_path / "t", n_files=30))]
    out_a, a = _build(tmp_path / "a", src, tokens=500, seed=3)
    _build(tmp_path / "b", src, tokens=500, seed=3)
    _build(tmp_path / "c", src, tokens=500, seed=4)
    assert a["n_tokens"] == 500
    ta, tb, tc = (TokenCorpus(tmp_path / x / "corpus").tokens(0, 500) for x in "abc")
    assert np.array_equal(ta, tb) and not np.array_equal(ta, tc)
    manifest = json.loads((out_a / "manifest.json").read_text())
    assert manifest["bos_token_id"] == 0 and manifest["dtype"] == "uint32" and "bos_policy" in manifest


def test_broken_source_is_skipped_or_fatal_when_strict(tmp_path):
    def broken(_raw, _packages):
        raise CorpusError("package layout changed")
        yield ""  # pragma: no cover

    good = local_source(write_text_dir(tmp_path / "t", n_files=3))
    _, manifest = _build(tmp_path, [Source("broken", "x", broken), good])
    assert "package layout changed" in manifest["sources"][0]["skipped"]
    with pytest.raises(CorpusError, match="broken"):
        _build(tmp_path / "s", [Source("broken", "x", broken), good], strict=True)


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(CorpusError, match="manifest"):
        TokenCorpus(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(CorpusError, match="format"):
        TokenCorpus(tmp_path)
