"""``load_transcoders`` / ``save_transcoders``: from a directory or hub reference to a checked set.

Loading is a pipeline whose every step can name the file at fault:

1. resolve the source to a local directory (``sources``);
2. read ``config.yaml`` (or recognise a bare GemmaScope ``layer_{i}/params.npz`` tree);
3. list the per-layer files and check the layer count (against ``n_layers`` if given);
4. read each layer (``circuit_tracer_layout`` / ``gemmascope_layout``), checking dtypes on read;
5. settle the activation (explicit, or JumpReLU iff thresholds exist) and TopK ``k``;
6. cast to ``device`` / ``dtype`` and construct the set, which checks every shape against the
   config (``d_model`` taken from the argument when given, else from layer 0's ``W_enc``).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tracewire.errors import ResourceLimitError, TranscoderFormatError
from tracewire.limits import MAX_LAYERS, require_regular_file
from tracewire.transcoders import circuit_tracer_layout as ct
from tracewire.transcoders import gemmascope_layout as gs
from tracewire.transcoders.activations import ACTIVATION_NAMES
from tracewire.transcoders.base import LayerWeights, TranscoderConfig, TranscoderSet
from tracewire.transcoders.cross_layer import CrossLayerTranscoder
from tracewire.transcoders.files import read_yaml_mapping
from tracewire.transcoders.lazy_rows import LazyRows
from tracewire.transcoders.per_layer import PerLayerTranscoders
from tracewire.transcoders.sites import input_site, output_site
from tracewire.transcoders.sources import ResolvedSource, fetch_hub_file, resolve_source

logger = logging.getLogger(__name__)


def load_transcoders(
    source: str | os.PathLike[str],
    *,
    n_layers: int | None = None,
    d_model: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
    lazy_decoder: bool = False,
) -> TranscoderSet:
    """Load a transcoder set from a local directory or a hub reference ``owner/repo[/subfolder][@rev]``.

    ``n_layers`` / ``d_model``, when given (usually from the model), are checked against the files.
    ``dtype=None`` keeps the files' dtype (that of layer 0's ``W_enc``). With ``lazy_decoder`` the
    decoders stay on disk and ``decoder_vectors`` reads only the rows asked for.
    """
    resolved = resolve_source(source)
    header = _read_header(resolved)
    if header.kind == "plt":
        layers, ks = _read_plt_layers(header, n_layers=n_layers, lazy_decoder=lazy_decoder)
    else:
        layers, ks = _read_clt_layers(header, n_layers=n_layers, lazy_decoder=lazy_decoder), []
    activation, k = _activation(header.raw, header.config_path, layers, ks)

    first = layers[0]
    w_enc_at = first.origin.get("W_enc", "layer 0's W_enc")
    if first.W_enc.ndim != 2:
        raise TranscoderFormatError(
            f"{w_enc_at}: expected a 2-D [d_transcoder, d_model] tensor, "
            f"found shape {tuple(first.W_enc.shape)}"
        )
    d_tc, file_d_model = (int(s) for s in first.W_enc.shape)
    dims_note = (
        f"d_transcoder from {w_enc_at}, d_model from the d_model argument"
        if d_model is not None
        else f"both from the shape of {w_enc_at}"
    )
    target_dtype = dtype if dtype is not None else first.W_enc.dtype
    layers = [_cast(w, device=torch.device(device), dtype=target_dtype) for w in layers]
    try:
        config = TranscoderConfig(
            kind=header.kind,
            model_name=header.model_name,
            feature_input_hook=header.input_hook,
            feature_output_hook=header.output_hook,
            activation=activation,
            k=k,
            scan=header.scan,
            n_layers=len(layers),
            d_model=d_model if d_model is not None else file_d_model,
            d_transcoder=d_tc,
            has_skip=any(w.W_skip is not None for w in layers),
        )
    except TranscoderFormatError as e:
        raise TranscoderFormatError(f"{header.config_path}: {e}") from e
    cls = PerLayerTranscoders if header.kind == "plt" else CrossLayerTranscoder
    ts = cls(config, layers, dims_note=dims_note)
    logger.info("loaded %s from %s", ts.extra_repr(), header.directory)
    return ts


def save_transcoders(ts: TranscoderSet, directory: str | os.PathLike[str]) -> Path:
    """Write ``ts`` to ``directory`` in the circuit-tracer layout (created if needed); returns the path.

    Refuses to write into a directory holding layer files that this set would not overwrite
    (e.g. a longer set saved there before), since they would make the result ambiguous to load.
    """
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    planned = set(ct.planned_files(ts))
    stale = sorted(
        path.name
        for pattern in (ct.PLT_FILE, ct.CLT_ENCODER_FILE, ct.CLT_DECODER_FILE)
        for path in ct.numbered_files(out, pattern).values()
        if path.name not in planned
    )
    if stale:
        raise TranscoderFormatError(
            f"{out}: holds transcoder files that saving this {ts.n_layers}-layer {ts.kind} set would not "
            f"overwrite ({', '.join(stale)}); save into an empty directory"
        )
    ct.write_set(ts, out)
    logger.info("saved %s to %s", ts.extra_repr(), out)
    return out


# --------------------------------------------------------------------------- config fields


@dataclass(frozen=True)
class _Header:
    """What config.yaml says (checked before any weights are read, so typos fail fast)."""

    directory: Path
    config_path: Path
    raw: Mapping[str, Any]
    kind: str
    model_name: str | None
    input_hook: str
    output_hook: str
    scan: str | None


def _read_header(resolved: ResolvedSource) -> _Header:
    directory = resolved.directory
    config_path = directory / ct.CONFIG_NAME
    if config_path.exists():
        raw = read_yaml_mapping(config_path)
        kind = _kind(raw, config_path)
    elif gs.find_layer_files(directory):  # a bare GemmaScope tree: hooks are known
        raw = {"feature_input_hook": gs.DEFAULT_INPUT_HOOK, "feature_output_hook": gs.DEFAULT_OUTPUT_HOOK}
        kind = "plt"
    else:
        raise TranscoderFormatError(
            f"{directory}: no {ct.CONFIG_NAME} (needed for model_kind and hooks) and no GemmaScope "
            f"layer_{{i}}/{gs.PARAMS_NAME} files"
        )
    input_hook = _required_str(raw, "feature_input_hook", config_path)
    output_hook = _required_str(raw, "feature_output_hook", config_path)
    try:
        input_site(input_hook)
        output_site(output_hook)
    except TranscoderFormatError as e:
        raise TranscoderFormatError(f"{config_path}: {e}") from e
    return _Header(
        directory=directory,
        config_path=config_path,
        raw=raw,
        kind=kind,
        model_name=_optional_str(raw, "model_name", config_path),
        input_hook=input_hook,
        output_hook=output_hook,
        scan=_optional_str(raw, "scan", config_path) or resolved.scan_hint,
    )


def _kind(raw: Mapping[str, Any], config_path: Path) -> str:
    model_kind = raw.get("model_kind")
    if not isinstance(model_kind, str) or model_kind not in ct.MODEL_KINDS:
        raise TranscoderFormatError(
            f"{config_path}: field 'model_kind' is {model_kind!r}; "
            f"expected one of {', '.join(ct.MODEL_KINDS)}"
        )
    return ct.MODEL_KINDS[model_kind]


def _optional_str(raw: Mapping[str, Any], name: str, config_path: Path) -> str | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, str):
        raise TranscoderFormatError(f"{config_path}: field {name!r} must be a string, found {value!r}")
    return value


def _required_str(raw: Mapping[str, Any], name: str, config_path: Path) -> str:
    value = _optional_str(raw, name, config_path)
    if value is None:
        raise TranscoderFormatError(f"{config_path}: missing field {name!r}")
    return value


def _activation(
    raw: Mapping[str, Any], config_path: Path, layers: list[LayerWeights], ks: list[tuple[Path, int | None]]
) -> tuple[str, int | None]:
    """Activation name and TopK k; drops thresholds an explicit non-JumpReLU activation does not use."""
    declared = raw.get("activation")
    if declared is None:
        activation = "jumprelu" if any(w.threshold is not None for w in layers) else "relu"
    elif isinstance(declared, str) and declared.lower() in ACTIVATION_NAMES:
        activation = declared.lower()
    else:
        raise TranscoderFormatError(
            f"{config_path}: field 'activation' is {declared!r}; "
            f"expected one of {', '.join(ACTIVATION_NAMES)}"
        )
    if activation != "jumprelu" and any(w.threshold is not None for w in layers):
        logger.warning(
            "%s: activation is %s; ignoring the threshold tensors of the layer files", config_path, activation
        )
        for w in layers:
            w.threshold = None
    k_field = raw.get("k")
    if k_field is not None and (isinstance(k_field, bool) or not isinstance(k_field, int)):
        raise TranscoderFormatError(f"{config_path}: field 'k' must be an integer, found {k_field!r}")
    if activation != "topk":
        if k_field is not None:
            logger.warning("%s: field 'k' ignored because activation is %s", config_path, activation)
        return activation, None
    k: int | None = k_field
    for path, file_k in ks:
        if file_k is None:
            continue
        if k is not None and file_k != k:
            source = f"field 'k' of {config_path}" if k_field is not None else "other layer files"
            raise TranscoderFormatError(f"{path}, tensor 'k': {file_k} disagrees with k={k} from {source}")
        k = file_k
    if k is None:
        raise TranscoderFormatError(
            f"{config_path}: activation is topk but no field 'k' (nor a 'k' tensor) gives k"
        )
    return activation, k


# --------------------------------------------------------------------------- layer files


def _check_layer_count(
    found: Mapping[int, object], *, n_layers: int | None, where: Path, name_of: Callable[[int], str]
) -> int:
    """Number of layers, after checking that files exist for exactly layers 0..n-1."""
    if not found:
        raise TranscoderFormatError(
            f"{where}: no layer files found (expected {name_of(0)}, {name_of(1)}, ...)"
        )
    highest = max(found)
    if n_layers is None and highest >= MAX_LAYERS:  # checked before range(highest + 1) is built
        raise ResourceLimitError(
            f"{where}: {name_of(highest)} names layer {highest}; at most {MAX_LAYERS} layers are supported"
        )
    expected = n_layers if n_layers is not None else highest + 1
    missing = _first_names((i for i in range(expected) if i not in found), name_of)
    extra = _first_names((i for i in sorted(found) if not 0 <= i < expected), name_of)
    if missing or extra:
        why = (
            "the n_layers argument"
            if n_layers is not None
            else f"the highest layer file, {name_of(max(found))}"
        )
        details = [f"missing: {', '.join(missing)}"] if missing else []
        details += [f"unexpected: {', '.join(extra)}"] if extra else []
        raise TranscoderFormatError(
            f"{where}: layer count mismatch: expected {expected} layers (from {why}), "
            f"found files for {len(found)}; {'; '.join(details)}"
        )
    return expected


def _first_names(layers: Iterator[int], name_of: Callable[[int], str], shown: int = 8) -> list[str]:
    """Names of the first ``shown`` layers of ``layers`` ("..." when there are more)."""
    names = [name_of(i) for i in itertools.islice(layers, shown)]
    if next(layers, None) is not None:
        names.append("...")
    return names


def _listed_files(raw: Mapping[str, Any], config_path: Path) -> dict[int, Path] | None:
    """Per-layer files from config.yaml's ``transcoders`` list (paths or ``hf://`` URIs), if present."""
    listed = raw.get("transcoders")
    if listed is None:
        return None
    if not isinstance(listed, list) or not listed:
        raise TranscoderFormatError(
            f"{config_path}: field 'transcoders' must be a non-empty list of file paths"
        )
    files: dict[int, Path] = {}
    for position, entry in enumerate(listed):
        layer, location = position, entry
        if isinstance(entry, dict):  # older circuit-tracer form: {id, layer, filepath}
            layer, location = entry.get("layer", position), entry.get("filepath")
        if not isinstance(location, str) or isinstance(layer, bool) or not isinstance(layer, int):
            raise TranscoderFormatError(
                f"{config_path}: field 'transcoders', entry {position}: bad entry {entry!r}"
            )
        if layer in files:
            raise TranscoderFormatError(f"{config_path}: field 'transcoders' lists layer {layer} twice")
        if location.startswith("hf://"):
            files[layer] = fetch_hub_file(location, referenced_in=config_path)
        else:
            path = Path(location).expanduser()
            files[layer] = path if path.is_absolute() else config_path.parent / path
    return files


def _read_plt_layers(
    header: _Header, *, n_layers: int | None, lazy_decoder: bool
) -> tuple[list[LayerWeights], list[tuple[Path, int | None]]]:
    """Per-layer weights, and each safetensors file's TopK ``k`` tensor (if any)."""
    directory, config_path = header.directory, header.config_path
    files = _listed_files(header.raw, config_path)
    if files is not None:
        where, name_of = config_path, (lambda i: f"entry for layer {i} in 'transcoders'")
    else:
        files = ct.numbered_files(directory, ct.PLT_FILE)
        where, name_of = directory, ct.plt_file_name
        if not files:  # GemmaScope tree
            files = gs.find_layer_files(directory)
            name_of = lambda i: f"layer_{i}/{gs.PARAMS_NAME}"  # noqa: E731
    count = _check_layer_count(files, n_layers=n_layers, where=where, name_of=name_of)
    layers: list[LayerWeights] = []
    ks: list[tuple[Path, int | None]] = []
    for layer in range(count):
        path = files[layer]
        if not path.exists():
            raise TranscoderFormatError(f"{path}: file not found (layer {layer}, listed in {config_path})")
        require_regular_file(path, what=f"layer {layer} file", error=TranscoderFormatError)
        if path.suffix == ".npz":
            if lazy_decoder:
                logger.warning("%s: npz archives cannot be read by rows; loading W_dec into memory", path)
            layers.append(gs.read_npz_layer(path))
        else:
            weights, k = ct.read_plt_layer(path, lazy_decoder=lazy_decoder)
            layers.append(weights)
            ks.append((path, k))
    return layers, ks


def _read_clt_layers(header: _Header, *, n_layers: int | None, lazy_decoder: bool) -> list[LayerWeights]:
    """Per-layer weights from W_enc_{i} / W_dec_{i} files (in the directory or listed in the config)."""
    directory = header.directory
    listed = _listed_files(header.raw, header.config_path)
    pool = {p.name: p for p in listed.values()} if listed is not None else None

    def numbered(pattern: re.Pattern[str]) -> dict[int, Path]:
        if pool is None:
            return ct.numbered_files(directory, pattern)
        return {int(m.group(1)): p for name, p in pool.items() if (m := pattern.match(name))}

    encoders, decoders = numbered(ct.CLT_ENCODER_FILE), numbered(ct.CLT_DECODER_FILE)
    count = _check_layer_count(
        encoders, n_layers=n_layers, where=directory, name_of=lambda i: ct.clt_file_names(i)[0]
    )
    _check_layer_count(decoders, n_layers=count, where=directory, name_of=lambda i: ct.clt_file_names(i)[1])
    return [ct.read_clt_layer(encoders[i], decoders[i], i, lazy_decoder=lazy_decoder) for i in range(count)]


def _cast(w: LayerWeights, *, device: torch.device, dtype: torch.dtype) -> LayerWeights:
    """``w`` with every in-memory tensor on ``device`` in ``dtype`` (lazy decoders cast on read)."""

    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=dtype)

    W_dec = w.W_dec if isinstance(w.W_dec, LazyRows) else w.W_dec.to(device=device, dtype=dtype)
    W_enc, b_enc, b_dec = move(w.W_enc), move(w.b_enc), move(w.b_dec)
    assert W_enc is not None and b_enc is not None and b_dec is not None
    return replace(
        w,
        W_enc=W_enc,
        b_enc=b_enc,
        W_dec=W_dec,
        b_dec=b_dec,
        threshold=move(w.threshold),
        W_skip=move(w.W_skip),
    )
