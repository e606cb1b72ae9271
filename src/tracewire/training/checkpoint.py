"""Training checkpoints: safetensors for tensors, JSON for the rest, no pickle, atomic.

A checkpoint at step ``s`` is two files, ``step-{s}.safetensors`` (module parameters and buffers,
Adam moments and step counts, RNG state as a uint8 tensor, firing-rate EMA) and ``step-{s}.json``
(config, step, data position, curves so far). Each is written to a temporary file and renamed;
``latest.json`` is replaced last and is the only thing ``--resume`` trusts, so a SIGKILL at any
moment leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from tracewire.atomic import atomic_write_bytes
from tracewire.errors import CheckpointError
from tracewire.limits import check_finite, read_json_object, require_regular_file

log = logging.getLogger(__name__)

LATEST = "latest.json"
KEEP = 2


@dataclass
class Checkpoint:
    step: int
    tensors: dict[str, Tensor]
    state: dict[str, Any]


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1).encode("utf-8"))


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Tensor]:
    """Adam state as named tensors (``adam.{param}.{exp_avg|exp_avg_sq|step}``)."""
    out: dict[str, Tensor] = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, param in zip(names, params, strict=True):
        for key, value in optimizer.state.get(param, {}).items():
            out[f"adam.{name}.{key}"] = value.detach().clone().reshape(value.shape)
    return out


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, Tensor]
) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for name, param in zip(names, params, strict=True):
        state = {key.rsplit(".", 1)[1]: value for key, value in tensors.items()
                 if key.startswith(f"adam.{name}.") and key.count(".") == name.count(".") + 2}  # fmt: skip
        if state:
            optimizer.state[param] = {k: v.clone() for k, v in state.items()}


def save_checkpoint(directory: Path, step: int, tensors: dict[str, Tensor], state: dict[str, Any]) -> None:
    """Write checkpoint ``step`` and point ``latest.json`` at it; older ones beyond ``KEEP`` are removed.

    The state JSON carries a manifest (name -> shape, dtype) of the tensors file, so a load can
    tell a checkpoint that is whole from one whose files were mixed up or damaged.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = _stem(step)
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    manifest = {k: {"shape": list(v.shape), "dtype": _dtype_name(v)} for k, v in payload.items()}
    atomic_write_bytes(directory / f"{stem}.safetensors", safetensors_bytes(payload))
    _write_json(directory / f"{stem}.json", {"step": step, **state, MANIFEST_KEY: manifest})
    _write_json(directory / LATEST, {"step": step, "tensors": f"{stem}.safetensors", "state": f"{stem}.json"})
    stems = sorted({p.name.split(".")[0] for p in directory.glob("step-*.json")})
    for old in stems[:-KEEP]:
        for suffix in (".safetensors", ".json"):
            (directory / f"{old}{suffix}").unlink(missing_ok=True)
    log.debug("checkpoint %s written to %s", stem, directory)


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint ``latest.json`` names, validated; None when there is none.

    ``latest.json`` is not trusted blindly: its step must name its own files, the state JSON must
    agree on the step and carry the manifest, and the tensors must match the manifest's names,
    shapes and dtypes and be finite (a NaN weight or Adam moment is never resumed). Any
    mismatch raises :class:`CheckpointError` naming the file.
    """
    latest = directory / LATEST
    if not latest.exists():
        return None
    pointer = _read_json(latest)
    step = pointer.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{latest}: field 'step' is {step!r}; expected a non-negative integer")
    stem = _stem(step)
    for key, suffix in (("tensors", ".safetensors"), ("state", ".json")):
        if pointer.get(key) != stem + suffix:
            raise CheckpointError(
                f"{latest}: field {key!r} is {pointer.get(key)!r}; expected {stem + suffix!r} for step {step}"
            )
    return read_checkpoint(directory, step, named_by=latest)


def read_checkpoint(directory: Path, step: int, *, named_by: Path | None = None) -> Checkpoint:
    """Checkpoint ``step`` of ``directory`` (any kept one, not only the latest), validated as
    :func:`load_checkpoint` describes; ``named_by`` is the file that pointed at it, for messages."""
    stem = _stem(step)
    state_path, tensors_path = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    state = _read_json(state_path)
    if state.get("step") != step or state.get("next_step", step) != step:
        raise CheckpointError(
            f"{state_path}: step {state.get('step')!r} (next_step {state.get('next_step')!r}) "
            f"disagrees with {named_by or 'its file name'} (step {step})"
        )
    manifest = state.pop(MANIFEST_KEY, None)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{state_path}: no tensor manifest (written by an older tracewire?)")
    tensors = _read_tensors(tensors_path)
    _check_manifest(tensors, manifest, tensors_path)
    return Checkpoint(step=step, tensors=tensors, state=state)


MANIFEST_KEY = "tensor_manifest"


def _dtype_name(tensor: Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _stem(step: int) -> str:
    return f"step-{step:08d}"


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, what="checkpoint file", error=CheckpointError)


def _read_tensors(path: Path) -> dict[str, Tensor]:
    require_regular_file(path, what="checkpoint tensors", error=CheckpointError)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for truncated / corrupt files
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc}); truncated or corrupt"
        ) from exc


def _check_manifest(tensors: dict[str, Tensor], manifest: dict[str, Any], path: Path) -> None:
    if set(tensors) != set(manifest):
        extra, missing = sorted(set(tensors) - set(manifest)), sorted(set(manifest) - set(tensors))
        raise CheckpointError(
            f"{path}: tensors disagree with the manifest (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for name, tensor in tensors.items():
        entry = manifest[name]
        want = (entry.get("shape"), entry.get("dtype")) if isinstance(entry, dict) else (None, None)
        found = (list(tensor.shape), _dtype_name(tensor))
        if want != tuple(found):
            raise CheckpointError(f"{path}: tensor {name!r} is {found}; the manifest says {list(want)}")
        check_finite(tensor, where=f"{path}, tensor {name!r}", error=CheckpointError)


def rng_tensors() -> dict[str, Tensor]:
    return {"rng.torch": torch.get_rng_state()}


def restore_rng(tensors: dict[str, Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
