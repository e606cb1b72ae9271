"""Low-level file access for transcoder weights: safetensors, npz and YAML, read safely, written atomically.

Every reader turns the library-specific exception (safetensors' ``SafetensorError``, numpy's zip
errors, yaml's ``YAMLError``) into a ``TranscoderFormatError`` naming the file, so a truncated
download is reported as such instead of as a Rust panic message without a path. Every writer
writes a temporary file next to the target and ``os.replace``-s it, so an interrupted save never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_to_bytes

from tracewire.atomic import atomic_write_bytes
from tracewire.errors import ResourceLimitError, TranscoderFormatError
from tracewire.limits import require_regular_file

# safetensors header dtype strings -> torch dtypes (for checks done without reading the data).
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@contextlib.contextmanager
def open_safetensors(path: Path) -> Iterator[Any]:
    """``safe_open`` that reports unreadable/truncated files as ``TranscoderFormatError`` naming ``path``."""
    if Path(path).exists():  # a FIFO would block the open below
        require_regular_file(path, what="safetensors file", error=TranscoderFormatError)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except FileNotFoundError as e:
        raise TranscoderFormatError(f"{path}: file not found") from e
    except (SafetensorError, OSError) as e:
        raise TranscoderFormatError(
            f"{path}: not a readable safetensors file (truncated or corrupt download?): {e}"
        ) from e
    with handle as f:
        try:
            yield f
        except SafetensorError as e:
            raise TranscoderFormatError(
                f"{path}: cannot read tensor data (truncated or corrupt?): {e}"
            ) from e


def safetensors_dtype(name: str, *, where: str) -> torch.dtype:
    """torch dtype for a safetensors header dtype string."""
    try:
        return _SAFETENSORS_DTYPES[name]
    except KeyError:
        raise TranscoderFormatError(f"{where}: unsupported safetensors dtype {name}") from None


_NPZ_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    MemoryError,
    NotImplementedError,
    RuntimeError,
)
"""What zipfile / numpy raise for a damaged archive (unsupported zip version, encryption, bad CRC...)."""
MAX_NPZ_BYTES = 8 * 1024**3
"""Cap on the declared uncompressed size of one ``.npz`` (a GemmaScope 16k layer is ~0.3 GB)."""


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, never unpickling (object arrays are rejected, not executed).

    Every member's ``.npy`` header is checked against the member's size first, so an archive
    declaring a huge shape (or a zip bomb) is refused before anything is allocated.
    """
    require_regular_file(path, error=TranscoderFormatError)
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError as e:
        raise TranscoderFormatError(f"{path}: file not found") from e
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise TranscoderFormatError(
            f"{path}: unreadable npz array ({e}); pickled arrays are not allowed"
        ) from e
    except _NPZ_DAMAGE as e:
        raise TranscoderFormatError(f"{path}: not a readable npz file (truncated or corrupt?): {e}") from e


def _check_npz_sizes(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        declared = sum(info.file_size for info in members)
        if declared > MAX_NPZ_BYTES:
            raise ResourceLimitError(
                f"{path}: declares {declared} uncompressed bytes; the limit is {MAX_NPZ_BYTES}"
            )
        for info in members:
            with archive.open(info) as member:
                major, _ = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
                if dtype.hasobject:
                    raise TranscoderFormatError(
                        f"{path}, array {info.filename!r}: object dtype; pickled arrays are not allowed"
                    )
                needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                stored = info.file_size - member.tell()
                if needed != stored:
                    raise TranscoderFormatError(
                        f"{path}, array {info.filename!r}: header declares shape {tuple(shape)} "
                        f"({needed} bytes) but the member holds {stored} bytes (truncated or corrupt?)"
                    )


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; syntax errors name the file and line."""
    require_regular_file(path, what="YAML file", error=TranscoderFormatError)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TranscoderFormatError(f"{path}: cannot read: {e}") from e
    if len(text) > MAX_YAML_CHARS:
        raise ResourceLimitError(
            f"{path}: {len(text)} characters; a transcoder config is at most {MAX_YAML_CHARS}"
        )
    if _flow_depth(text) > MAX_YAML_DEPTH:  # PyYAML is quadratic in nesting: 5000 levels take seconds
        raise TranscoderFormatError(f"{path}: invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise TranscoderFormatError(f"{where}: invalid YAML: {problem}") from e
    except RecursionError as e:
        raise TranscoderFormatError(f"{path}: invalid YAML: nested too deeply") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TranscoderFormatError(
            f"{path}: expected a YAML mapping at the top level, found {type(data).__name__}"
        )
    return data


MAX_YAML_CHARS = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64


def _flow_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of YAML flow collections (quoted text ignored, roughly)."""
    depth = deepest = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def write_safetensors_atomically(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` (moved to CPU, made contiguous) as a safetensors file, atomically."""
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, safetensors_to_bytes(cpu))


def write_yaml_atomically(path: Path, data: dict[str, Any]) -> None:
    """Save a mapping as YAML (keys in insertion order), atomically."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    atomic_write_bytes(path, text.encode("utf-8"))
