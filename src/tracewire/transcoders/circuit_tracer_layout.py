"""The circuit-tracer on-disk layout: ``config.yaml`` plus one or two safetensors files per layer.

Per-layer sets (``model_kind: transcoder_set``) store ``layer_{i}.safetensors`` with ``W_enc``,
``W_dec``, ``b_enc``, ``b_dec`` and optionally ``activation_function.threshold``, ``W_skip`` and
``k``. Cross-layer sets (``model_kind: cross_layer_transcoder``) store ``W_enc_{i}.safetensors``
(``W_enc_{i}``, ``b_enc_{i}``, ``b_dec_{i}``, optional ``threshold_{i}`` and — our addition —
``W_skip_{i}``) and ``W_dec_{i}.safetensors`` (``W_dec_{i}``). Using the same layout means sets
trained for circuit-tracer load here unchanged and sets saved here load there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tracewire.errors import TranscoderFormatError
from tracewire.limits import check_finite
from tracewire.transcoders.base import LayerWeights, TranscoderConfig, TranscoderSet
from tracewire.transcoders.files import open_safetensors, write_safetensors_atomically, write_yaml_atomically
from tracewire.transcoders.lazy_rows import LazyRows
from tracewire.transcoders.validation import check_floating

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
MODEL_KINDS: dict[str, str] = {"transcoder_set": "plt", "cross_layer_transcoder": "clt"}
"""``model_kind`` value in config.yaml -> ``TranscoderConfig.kind``."""

PLT_FILE = re.compile(r"^layer_(\d+)\.safetensors$")
CLT_ENCODER_FILE = re.compile(r"^W_enc_(\d+)\.safetensors$")
CLT_DECODER_FILE = re.compile(r"^W_dec_(\d+)\.safetensors$")

# LayerWeights field -> tensor key in a PLT layer file.
_PLT_KEYS: dict[str, str] = {
    "W_enc": "W_enc",
    "b_enc": "b_enc",
    "W_dec": "W_dec",
    "b_dec": "b_dec",
    "threshold": "activation_function.threshold",
    "W_skip": "W_skip",
}
_REQUIRED = ("W_enc", "b_enc", "W_dec", "b_dec")


def plt_file_name(layer: int) -> str:
    return f"layer_{layer}.safetensors"


def clt_file_names(layer: int) -> tuple[str, str]:
    """(encoder file, decoder file) of a CLT source layer."""
    return f"W_enc_{layer}.safetensors", f"W_dec_{layer}.safetensors"


def _clt_encoder_keys(layer: int) -> dict[str, str]:
    return {
        "W_enc": f"W_enc_{layer}",
        "b_enc": f"b_enc_{layer}",
        "b_dec": f"b_dec_{layer}",
        "threshold": f"threshold_{layer}",
        "W_skip": f"W_skip_{layer}",
    }


def numbered_files(directory: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    """Files of ``directory`` whose names match ``pattern`` (one integer group), by that integer."""
    found: dict[int, Path] = {}
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match:  # not only regular files: a folder or FIFO of that name is reported, not skipped
            found[int(match.group(1))] = path
    return found


def _read_fields(
    path: Path, keys: Mapping[str, str], *, skip: frozenset[str] = frozenset()
) -> tuple[dict[str, Tensor | None], dict[str, str], Tensor | None]:
    """Tensors ``keys`` (field -> key) of ``path``; required ones must exist; floats checked at read time.

    Returns the tensors by field, their locations for error messages, and the ``k`` entry if any.
    """
    tensors: dict[str, Tensor | None] = {}
    origin = {field: f"{path}, tensor {key!r}" for field, key in keys.items()}
    with open_safetensors(path) as f:
        present = set(f.keys())
        for field, key in keys.items():
            if field in skip:
                continue
            if key not in present:
                if field in _REQUIRED:
                    raise TranscoderFormatError(
                        f"{path}: missing tensor {key!r}; "
                        f"the file has: {', '.join(sorted(present)) or 'no tensors'}"
                    )
                tensors[field] = None
                continue
            tensor = f.get_tensor(key)
            check_floating(tensor, where=origin[field])  # before any cast would hide an int tensor
            check_finite(tensor, where=origin[field], error=TranscoderFormatError)
            tensors[field] = tensor
        k = f.get_tensor("k") if "k" in present else None
    return tensors, origin, k


def _k_from_tensor(k: Tensor, path: Path) -> int:
    if k.numel() != 1 or k.dtype.is_floating_point or k.dtype == torch.bool:
        raise TranscoderFormatError(
            f"{path}, tensor 'k': expected a 0-d or 1-element integer tensor, "
            f"found shape {tuple(k.shape)} dtype {k.dtype}"
        )
    return int(k.item())


def read_plt_layer(path: Path, *, lazy_decoder: bool) -> tuple[LayerWeights, int | None]:
    """One ``layer_{i}.safetensors`` file, and the TopK ``k`` it stores (if any)."""
    fields, origin, k = _read_fields(
        path, _PLT_KEYS, skip=frozenset({"W_dec"}) if lazy_decoder else frozenset()
    )
    W_dec: Tensor | LazyRows | None = LazyRows(path, "W_dec") if lazy_decoder else fields["W_dec"]
    weights = _layer_weights(fields, W_dec, origin)
    return weights, (_k_from_tensor(k, path) if k is not None else None)


def read_clt_layer(encoder_path: Path, decoder_path: Path, layer: int, *, lazy_decoder: bool) -> LayerWeights:
    """The encoder and decoder files of CLT source layer ``layer``."""
    fields, origin, _ = _read_fields(encoder_path, _clt_encoder_keys(layer))
    dec_key = f"W_dec_{layer}"
    origin["W_dec"] = f"{decoder_path}, tensor {dec_key!r}"
    if lazy_decoder:
        W_dec: Tensor | LazyRows | None = LazyRows(decoder_path, dec_key)
    else:
        dec_fields, _, _ = _read_fields(decoder_path, {"W_dec": dec_key})
        W_dec = dec_fields["W_dec"]
    return _layer_weights(fields, W_dec, origin)


def _layer_weights(
    fields: dict[str, Tensor | None], W_dec: Tensor | LazyRows | None, origin: dict[str, str]
) -> LayerWeights:
    W_enc, b_enc, b_dec = fields["W_enc"], fields["b_enc"], fields["b_dec"]
    assert W_enc is not None and b_enc is not None and b_dec is not None and W_dec is not None  # _REQUIRED
    return LayerWeights(
        W_enc=W_enc,
        b_enc=b_enc,
        W_dec=W_dec,
        b_dec=b_dec,
        threshold=fields.get("threshold"),
        W_skip=fields.get("W_skip"),
        origin=origin,
    )


# --------------------------------------------------------------------------- writing


def config_mapping(config: TranscoderConfig) -> dict[str, Any]:
    """The ``config.yaml`` content for ``config`` (sizes are implied by the tensors, so not written).

    ``activation`` is left out for JumpReLU: circuit-tracer's documented values are ``relu`` and
    ``topk``, and an absent ``activation`` with threshold tensors present already means JumpReLU.
    """
    model_kind = {kind: name for name, kind in MODEL_KINDS.items()}[config.kind]
    data: dict[str, Any] = {"model_kind": model_kind}
    if config.model_name is not None:
        data["model_name"] = config.model_name
    data["feature_input_hook"] = config.feature_input_hook
    data["feature_output_hook"] = config.feature_output_hook
    if config.activation != "jumprelu":
        data["activation"] = config.activation
    if config.k is not None:
        data["k"] = config.k
    if config.scan is not None:
        data["scan"] = config.scan
    return data


def planned_files(ts: TranscoderSet) -> list[str]:
    """Names of the weight files ``write_set`` writes for ``ts``."""
    if ts.kind == "plt":
        return [plt_file_name(i) for i in range(ts.n_layers)]
    return [name for i in range(ts.n_layers) for name in clt_file_names(i)]


def write_set(ts: TranscoderSet, directory: Path) -> None:
    """Write ``ts`` in the circuit-tracer layout: weight files first, ``config.yaml`` last.

    Writing the config last means a directory interrupted mid-save does not look like a
    complete (new) set; each file itself is replaced atomically.
    """
    for layer in range(ts.n_layers):
        W_dec = ts.full_decoder(layer)
        if ts.kind == "plt":
            tensors = {
                "W_enc": ts.W_enc[layer],
                "W_dec": W_dec,
                "b_enc": ts.b_enc[layer],
                "b_dec": ts.b_dec[layer],
            }
            tensors.update(
                _optional_tensors(ts, layer, threshold_key="activation_function.threshold", skip_key="W_skip")
            )
            if ts.config.k is not None:
                tensors["k"] = torch.tensor(ts.config.k, dtype=torch.int64)
            write_safetensors_atomically(directory / plt_file_name(layer), tensors)
        else:
            enc_name, dec_name = clt_file_names(layer)
            tensors = {
                f"W_enc_{layer}": ts.W_enc[layer],
                f"b_enc_{layer}": ts.b_enc[layer],
                f"b_dec_{layer}": ts.b_dec[layer],
            }
            tensors.update(
                _optional_tensors(ts, layer, threshold_key=f"threshold_{layer}", skip_key=f"W_skip_{layer}")
            )
            write_safetensors_atomically(directory / enc_name, tensors)
            write_safetensors_atomically(directory / dec_name, {f"W_dec_{layer}": W_dec})
        logger.debug("wrote layer %d of %s to %s", layer, ts.kind, directory)
    write_yaml_atomically(directory / CONFIG_NAME, config_mapping(ts.config))


def _optional_tensors(
    ts: TranscoderSet, layer: int, *, threshold_key: str, skip_key: str
) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    threshold = ts.threshold(layer)
    if threshold is not None:
        out[threshold_key] = threshold
    if ts.W_skip is not None:
        out[skip_key] = ts.W_skip[layer]
    return out
