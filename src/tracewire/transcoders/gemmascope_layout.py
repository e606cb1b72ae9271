"""GemmaScope transcoders: one ``params.npz`` per layer, with ``W_enc`` stored transposed.

GemmaScope (Lieberum et al. 2024) ships JumpReLU transcoders for Gemma 2 as numpy archives with
``W_enc [d_model, d_tc]``, ``W_dec [d_tc, d_model]``, ``b_enc``, ``b_dec`` and ``threshold``.
We read them into the circuit-tracer orientation (``W_enc [d_tc, d_model]``) so that the rest of
tracewire never sees the difference. The transcoders read Gemma's pre-MLP-normalised residual
and predict the MLP block's output after its post-MLP norm, hence the default hooks.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from tracewire.errors import TranscoderFormatError
from tracewire.limits import check_finite
from tracewire.transcoders.base import LayerWeights
from tracewire.transcoders.files import read_npz

LAYER_DIR = re.compile(r"^layer_(\d+)$")
PARAMS_NAME = "params.npz"
DEFAULT_INPUT_HOOK = "ln2.hook_normalized"
DEFAULT_OUTPUT_HOOK = "hook_mlp_out"

_FIELDS: dict[str, str] = {
    "W_enc": "W_enc",
    "b_enc": "b_enc",
    "W_dec": "W_dec",
    "b_dec": "b_dec",
    "threshold": "threshold",
}
_REQUIRED = ("W_enc", "b_enc", "W_dec", "b_dec")


def find_layer_files(directory: Path) -> dict[int, Path]:
    """``layer_{i}/params.npz`` files under ``directory``, by layer."""
    found: dict[int, Path] = {}
    for sub in directory.iterdir():
        match = LAYER_DIR.match(sub.name)
        if match and (sub / PARAMS_NAME).exists():  # a non-file params.npz is reported when read
            found[int(match.group(1))] = sub / PARAMS_NAME
    return found


def read_npz_layer(path: Path) -> LayerWeights:
    """One GemmaScope ``params.npz``, with ``W_enc`` transposed to ``[d_tc, d_model]``."""
    arrays = read_npz(path)
    origin = {field: f"{path}, tensor {key!r}" for field, key in _FIELDS.items()}
    origin["W_enc"] = f"{path}, tensor 'W_enc' (stored transposed as [d_model, d_transcoder])"
    tensors: dict[str, torch.Tensor | None] = {}
    for field, key in _FIELDS.items():
        array = arrays.get(key)
        if array is None:
            if field in _REQUIRED:
                raise TranscoderFormatError(
                    f"{path}: missing array {key!r}; the file has: {', '.join(sorted(arrays)) or 'no arrays'}"
                )
            tensors[field] = None
            continue
        if not np.issubdtype(array.dtype, np.floating):
            raise TranscoderFormatError(f"{origin[field]}: dtype {array.dtype} is not floating point")
        check_finite(array, where=origin[field], error=TranscoderFormatError)
        tensors[field] = torch.from_numpy(np.ascontiguousarray(array))
    W_enc = tensors["W_enc"]
    assert W_enc is not None
    if W_enc.ndim != 2:
        raise TranscoderFormatError(
            f"{origin['W_enc']}: expected a 2-D array, found shape {tuple(W_enc.shape)}"
        )
    W_enc, b_enc, W_dec, b_dec = W_enc.T.contiguous(), tensors["b_enc"], tensors["W_dec"], tensors["b_dec"]
    assert b_enc is not None and W_dec is not None and b_dec is not None
    return LayerWeights(
        W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, threshold=tensors["threshold"], origin=origin
    )
