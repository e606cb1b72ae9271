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
from tracewire.errors import InvalidArgumentError

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
    """Write checkpoint ``step`` and point ``latest.json`` at it; older ones beyond ``KEEP`` are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(directory / f"{stem}.safetensors", safetensors_bytes(payload))
    _write_json(directory / f"{stem}.json", {"step": step, **state})
    _write_json(directory / LATEST, {"step": step, "tensors": f"{stem}.safetensors", "state": f"{stem}.json"})
    stems = sorted({p.name.split(".")[0] for p in directory.glob("step-*.json")})
    for old in stems[:-KEEP]:
        for suffix in (".safetensors", ".json"):
            (directory / f"{old}{suffix}").unlink(missing_ok=True)
    log.debug("checkpoint %s written to %s", stem, directory)


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint ``latest.json`` names, or None when there is none."""
    latest = directory / LATEST
    if not latest.exists():
        return None
    try:
        pointer = json.loads(latest.read_text("utf-8"))
        state = json.loads((directory / pointer["state"]).read_text("utf-8"))
    except (json.JSONDecodeError, KeyError, FileNotFoundError) as exc:
        raise InvalidArgumentError(f"{latest}: unreadable checkpoint pointer or state ({exc})") from exc
    tensors = load_file(str(directory / pointer["tensors"]))
    return Checkpoint(step=int(pointer["step"]), tensors=tensors, state=state)


def rng_tensors() -> dict[str, Tensor]:
    return {"rng.torch": torch.get_rng_state()}


def restore_rng(tensors: dict[str, Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
