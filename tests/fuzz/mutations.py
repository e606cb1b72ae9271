"""Seeded mutations that turn a valid file into a malformed one, by file kind.

Each mutator takes ``(rng, path)``, damages ``path`` in place (or replaces it by a FIFO or a
folder) and returns a short description of what it did, so a failing case can be reproduced
from its seed and read in the report. Byte-level damage (truncation, flips, garbage) is shared;
structured mutators edit the format's header or fields with hostile values (huge sizes, NaN,
wrong types), which is where loaders used to allocate or accept what they should refuse.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sqlite3
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Mutator = Callable[[random.Random, Path], str]

HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    True,
    -1,
    0,
    1,
    2**31,
    10**18,
    -(10**18),
    10**30,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "x",
    "",
    "1e5",
    3.5,
    [],
    {},
    [1, 2, 3],
    {"a": 1},
)
HOSTILE_SIZES: tuple[int, ...] = (0, -1, 1, 2, 10**8, 2**31, 2**40, 10**18, 99999999999)


# ----------------------------------------------------------------------------------- byte level


def truncate(rng: random.Random, path: Path) -> str:
    data = path.read_bytes()
    cut = rng.randrange(0, max(1, len(data)))
    path.write_bytes(data[:cut])
    return f"truncate {path.name} to {cut} of {len(data)} bytes"


def flip_bytes(rng: random.Random, path: Path) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "flip: empty file"
    n = rng.randint(1, 8)
    for _ in range(n):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"flip {n} bits of {path.name}"


def overwrite_span(rng: random.Random, path: Path) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "overwrite: empty file"
    start = rng.randrange(len(data))
    length = min(len(data) - start, rng.randint(1, 64))
    data[start : start + length] = rng.randbytes(length)
    path.write_bytes(bytes(data))
    return f"overwrite {length} bytes of {path.name} at {start}"


def append_garbage(rng: random.Random, path: Path) -> str:
    with open(path, "ab") as f:
        f.write(rng.randbytes(rng.randint(1, 256)))
    return f"append garbage to {path.name}"


def empty(rng: random.Random, path: Path) -> str:
    path.write_bytes(b"")
    return f"empty {path.name}"


def fifo(rng: random.Random, path: Path) -> str:
    path.unlink()
    os.mkfifo(path)
    return f"replace {path.name} by a FIFO"


def directory(rng: random.Random, path: Path) -> str:
    path.unlink()
    path.mkdir()
    return f"replace {path.name} by a folder"


BYTE_MUTATORS: tuple[Mutator, ...] = (
    truncate,
    flip_bytes,
    overwrite_span,
    append_garbage,
    empty,
    fifo,
    directory,
)


# ----------------------------------------------------------------------------------- JSON / YAML


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:20]):
            out += _paths(item, (*prefix, index))
    return out


def _set(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return document


def mutate_tree(rng: random.Random, document: Any) -> tuple[Any, str]:
    """Replace, delete or nest one randomly chosen value of a parsed JSON/YAML tree."""
    paths = _paths(document)
    path = rng.choice(paths[1:] if len(paths) > 1 else paths)
    action = rng.random()
    if action < 0.15 and path:
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
        return document, f"delete {'.'.join(map(str, path))}"
    if action < 0.2:
        value: Any = _nested(rng.randint(50, 5000))
    elif action < 0.35:
        value = rng.choice(HOSTILE_SIZES)
    else:
        value = rng.choice(HOSTILE_VALUES)
    return _set(document, path, value), f"set {'.'.join(map(str, path)) or '<root>'} = {_short(value)}"


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 40 else text[:37] + "..."


def _field_mutator(load: Callable[[str], Any], dump: Callable[[Any], str], too_deep: str) -> Mutator:
    def mutate(rng: random.Random, path: Path) -> str:
        document, what = mutate_tree(rng, load(path.read_text("utf-8")))
        try:
            path.write_text(dump(document), "utf-8")
        except RecursionError:
            path.write_text(too_deep, "utf-8")
        return f"{path.name}: {what}"

    return mutate


def _yaml_load(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _yaml_dump(document: Any) -> str:
    import yaml

    return str(yaml.safe_dump(document))


json_field = _field_mutator(json.loads, json.dumps, "[" * 100000)
yaml_field = _field_mutator(_yaml_load, _yaml_dump, "a: " + "[" * 10000)


# ----------------------------------------------------------------------------------- safetensors


def _read_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def _write_safetensors(path: Path, header: dict[str, Any], body: bytes, length: int | None = None) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + body)


def safetensors_header(rng: random.Random, path: Path) -> str:
    """Edit one tensor's shape, dtype or offsets, or a ``__metadata__`` string, in the header."""
    header, body = _read_safetensors(path)
    tensors = [k for k in header if k != "__metadata__"]
    choice = rng.random()
    if choice < 0.25 and "__metadata__" in header and header["__metadata__"]:
        key = rng.choice(sorted(header["__metadata__"]))
        try:
            value = json.loads(header["__metadata__"][key])
            value, what = mutate_tree(rng, value)
            text = json.dumps(value)
        except (ValueError, RecursionError):
            text, what = json.dumps(rng.choice(HOSTILE_VALUES)), "replace"
        header["__metadata__"][key] = text
        _write_safetensors(path, header, body)
        return f"{path.name} metadata {key}: {what}"
    name = rng.choice(tensors)
    entry = header[name]
    if choice < 0.5:
        shape = list(entry["shape"]) or [1]
        shape[rng.randrange(len(shape))] = rng.choice(HOSTILE_SIZES)
        entry["shape"] = shape
        what = f"shape {shape}"
    elif choice < 0.65:
        entry["dtype"] = rng.choice(["F64", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3", "X99"])
        what = f"dtype {entry['dtype']}"
    elif choice < 0.8:
        start, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[start, end + 8], [end, start], [0, 2**40], [start, start]])
        what = f"offsets {entry['data_offsets']}"
    elif choice < 0.9:
        del header[name]
        what = "removed"
    else:
        _write_safetensors(path, header, body, length=rng.choice([0, 7, 2**40, len(body) * 3]))
        return f"{path.name}: header length field"
    _write_safetensors(path, header, body)
    return f"{path.name} tensor {name}: {what}"


def safetensors_nan(rng: random.Random, path: Path) -> str:
    """Write NaN / Inf into one element of a float tensor (a valid file with non-finite data)."""
    header, body = _read_safetensors(path)
    floats = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] in ("F32", "F64")]
    floats = [k for k in floats if header[k]["data_offsets"][1] > header[k]["data_offsets"][0]]
    if not floats:
        return safetensors_header(rng, path)
    name = rng.choice(floats)
    start, end = header[name]["data_offsets"]
    size = 4 if header[name]["dtype"] == "F32" else 8
    index = rng.randrange((end - start) // size)
    value = rng.choice([math.nan, math.inf, -math.inf])
    packed = struct.pack("<f" if size == 4 else "<d", value)
    data = bytearray(body)
    data[start + index * size : start + (index + 1) * size] = packed
    _write_safetensors(path, header, bytes(data))
    return f"{path.name} tensor {name}[{index}] = {value}"


# ----------------------------------------------------------------------------------- numpy


def npz_member(rng: random.Random, path: Path) -> str:
    """Rewrite one ``.npz`` member: hostile header shape, object dtype, NaN data, or int dtype."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    name = rng.choice(sorted(arrays))
    choice = rng.random()
    if choice < 0.4:
        what = _rewrite_npz_header(rng, path, arrays, name)
        return f"{path.name} member {name}: {what}"
    if choice < 0.7:
        array = arrays[name].astype(np.float32, copy=True)
        array.reshape(-1)[rng.randrange(array.size)] = rng.choice([np.nan, np.inf])
        arrays[name] = array
        what = "non-finite value"
    elif choice < 0.85:
        arrays[name] = arrays[name].astype(np.int32)
        what = "int dtype"
    else:
        arrays[name] = arrays[name].reshape(-1)[: rng.randint(0, 3)]
        what = "wrong shape"
    np.savez(path, **arrays)
    return f"{path.name} member {name}: {what}"


def _rewrite_npz_header(rng: random.Random, path: Path, arrays: dict[str, np.ndarray], name: str) -> str:
    shape = list(arrays[name].shape) or [1]
    shape[rng.randrange(len(shape))] = rng.choice(HOSTILE_SIZES[4:])
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in arrays.items():
            buffer = _npy_bytes(array, tuple(shape) if key == name else None)
            archive.writestr(f"{key}.npy", buffer)
    return f"header shape {shape}"


def _npy_bytes(array: np.ndarray, shape: tuple[int, ...] | None) -> bytes:
    header = {
        "descr": np.lib.format.dtype_to_descr(array.dtype),
        "fortran_order": False,
        "shape": shape if shape is not None else array.shape,
    }
    text = repr(header).encode("latin1")
    pad = -(10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + np.ascontiguousarray(array).tobytes()


def npy_header(rng: random.Random, path: Path) -> str:
    """Rewrite a ``.npy`` file's header: hostile shape, other dtype, or hostile values."""
    array = np.load(path, allow_pickle=False)
    choice = rng.random()
    if choice < 0.4:
        shape = list(array.shape) or [1]
        shape[rng.randrange(len(shape))] = rng.choice(HOSTILE_SIZES[4:])
        path.write_bytes(_npy_bytes(array, tuple(shape)))
        return f"{path.name}: header shape {shape}"
    if choice < 0.6:
        path.write_bytes(_npy_bytes(array.astype(rng.choice([np.int64, np.float32, np.uint8])), None))
        return f"{path.name}: dtype changed"
    flat = array.copy().reshape(-1)
    if flat.size:
        flat[rng.randrange(flat.size)] = rng.choice([np.iinfo(flat.dtype).max, 10**6, 0])
    np.save(path, flat.reshape(array.shape), allow_pickle=False)
    return f"{path.name}: one value set hostile"


# ----------------------------------------------------------------------------------- SQLite

SQL_MUTATIONS: tuple[str, ...] = (
    "DROP TABLE examples",
    "DROP TABLE vocab",
    "DROP TABLE features; CREATE VIEW features AS WITH RECURSIVE r(layer, feature) AS "
    "(SELECT 0, 0 UNION ALL SELECT layer, feature + 1 FROM r) SELECT * FROM r",
    "UPDATE features SET histogram = NULL",
    "UPDATE features SET histogram = 'text'",
    "UPDATE features SET quantile_values = x'00'",
    "UPDATE features SET groups = 'not json'",
    "UPDATE features SET groups = '[]'",
    "UPDATE features SET top_logit_ids = x'ffffff7f'",
    "UPDATE features SET act_max = 'NaN'",
    "UPDATE features SET act_sum = 1e999",
    "UPDATE examples SET grp = 99",
    "UPDATE examples SET token_ids = x'0102'",
    "UPDATE examples SET acts = x'0000c07f'",
    "UPDATE examples SET token_ids = x'ffffff7f'",
    "DELETE FROM vocab",
    "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    "UPDATE meta SET value = 'x' WHERE key = 'schema_version'",
    "UPDATE meta SET value = '\"other\"' WHERE key = 'format'",
    "DELETE FROM meta",
    "UPDATE meta SET value = '{' WHERE key = 'build'",
    "UPDATE labels SET text = x'ff'",
    "DROP TABLE labels; CREATE VIEW labels AS SELECT 0 AS layer, 0 AS feature, 'x' AS text",
)


def sqlite_edit(rng: random.Random, path: Path) -> str:
    statement = rng.choice(SQL_MUTATIONS)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(statement)
    except sqlite3.Error as exc:
        return f"{statement} (failed: {exc})"
    finally:
        db.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return statement


def remove(rng: random.Random, path: Path) -> str:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return f"remove {path.name}"
