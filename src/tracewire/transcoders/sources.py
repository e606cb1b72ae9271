"""Where transcoder files come from: a local directory, a hub repository, or an ``hf://`` file URI.

The rule that decides between local and hub is deliberately simple and stated in every error:
an existing local path is local; otherwise a preset name (``presets``, e.g. ``gemma``) is its
hub repository; otherwise a string shaped like ``owner/repo[/subfolder][@rev]``
is a Hugging Face hub reference; anything else is a missing directory.

Hub access must fail fast and say so when there is no network: ``HF_HUB_OFFLINE`` (read at call
time, because ``huggingface_hub`` reads it only at import) turns downloads into cache look-ups,
and a short ``etag_timeout`` bounds the wait on a dead connection.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tracewire.errors import TranscoderFormatError
from tracewire.transcoders.presets import find_preset, resolve_preset_error, shipped_directory

HUB_TIMEOUT_S = 5.0
"""Seconds to wait for the hub to answer before giving up (``etag_timeout``)."""

_HUB_REF = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"  # owner/name
    r"(?P<sub>(?:/[\w.-]+)+)?"  # /sub/folder
    r"(?:@(?P<rev>[\w./-]+))?$"  # @revision
)
_DOWNLOAD_PATTERNS = ["*.yaml", "*.safetensors", "*.npz"]


@dataclass(frozen=True)
class ResolvedSource:
    """A local directory holding a transcoder set, and the ``scan`` id a hub reference implies."""

    directory: Path
    scan_hint: str | None = None


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is true now, or was when ``huggingface_hub`` was imported."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_source(source: str | os.PathLike[str]) -> ResolvedSource:
    """Local directory for ``source`` (a directory, a ``config.yaml`` path, or a hub reference)."""
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            return ResolvedSource(path.resolve())
        if path.suffix in {".yaml", ".yml"}:
            return ResolvedSource(path.resolve().parent)
        raise TranscoderFormatError(f"{path}: expected a directory holding a transcoder set, found a file")
    text = os.fspath(source)
    if (preset := find_preset(text)) is not None:
        if preset.package is not None:
            return ResolvedSource(shipped_directory(preset).resolve(), scan_hint=f"tracewire/{preset.name}")
        try:
            return resolve_source(preset.repo)
        except TranscoderFormatError as e:
            raise resolve_preset_error(preset, e) from e
    match = _HUB_REF.match(text)
    if match is None:
        raise TranscoderFormatError(
            f"no such directory: {text!r} (resolved to {path.resolve()}); pass an existing local directory "
            "or a hub reference 'owner/repo[/subfolder][@revision]'"
        )
    repo, rev = match["repo"], match["rev"]
    sub = (match["sub"] or "").strip("/")
    root = _snapshot(text, repo, sub, rev)
    directory = root / sub if sub else root
    if not directory.is_dir():
        raise TranscoderFormatError(f"hub reference {text!r}: repository {repo} has no folder {sub!r}")
    scan = repo + (f"//{sub}" if sub else "") + (f"@{rev}" if rev else "")
    return ResolvedSource(directory, scan_hint=scan)


def fetch_hub_file(uri: str, *, referenced_in: Path) -> Path:
    """Local copy of ``hf://owner/repo/path/file?revision=REV`` (an entry of a config's ``transcoders``)."""
    body, _, query = uri.removeprefix("hf://").partition("?")
    parts = body.split("/")
    if len(parts) < 3 or not all(parts):
        raise TranscoderFormatError(
            f"{referenced_in}: bad hub file URI {uri!r}; expected hf://owner/repo/path/file"
        )
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    rev = None
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        if key == "revision":
            rev = value or None
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(
            repo, filename, revision=rev, local_files_only=hub_offline(), etag_timeout=HUB_TIMEOUT_S
        )
    except Exception as e:  # network stacks raise many types; all mean "could not get it"
        raise _hub_error(f"{referenced_in}: hub file {uri!r}", e) from e
    return Path(local)


def _snapshot(ref: str, repo: str, sub: str, rev: str | None) -> Path:
    from huggingface_hub import snapshot_download

    patterns = [f"{sub}/*"] if sub else _DOWNLOAD_PATTERNS
    try:
        root = snapshot_download(
            repo,
            revision=rev,
            allow_patterns=patterns,
            local_files_only=hub_offline(),
            etag_timeout=HUB_TIMEOUT_S,
        )
    except Exception as e:  # network stacks raise many types; all mean "could not get it"
        raise _hub_error(f"hub reference {ref!r} (no local directory of that name exists)", e) from e
    return Path(str(root))


def _hub_error(what: str, error: Exception) -> TranscoderFormatError:
    """One clear message for every way a hub download can fail."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError)):
        return TranscoderFormatError(f"{what}: {type(error).__name__}: {error}")
    offline = " (HF_HUB_OFFLINE is set, so only the local cache was searched)" if hub_offline() else ""
    return TranscoderFormatError(
        f"{what}: the Hugging Face hub could not be reached and the files are not in the local cache"
        f"{offline}. "
        "Download the transcoders elsewhere and pass their local directory instead, e.g. "
        "load_transcoders('/path/to/transcoders'). Cause: "
        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    )
