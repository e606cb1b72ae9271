"""Import circuit-tracer's pickled ``.pt`` graphs without running code from the file.

circuit-tracer saves a graph with ``torch.save`` of a dict (circuit-tracer.md §3.1) holding
tensors, plain values, ``LogitTarget`` named tuples and a config dataclass (``UnifiedConfig``, or
TransformerLens' ``HookedTransformerConfig`` in older files). Reading it with
``torch.load(weights_only=False)`` would run any code the pickle names, so:

1. ``torch.load(weights_only=True)``: enough for files that hold only tensors and plain values
   (e.g. re-saved with the config as a dict);
2. otherwise a restricted unpickler: ``find_class`` maps the class NAMES ``LogitTarget``,
   ``CustomTarget``, ``UnifiedConfig`` and ``HookedTransformerConfig`` (from whatever module) to
   :class:`PickledRecord`, an inert tuple that only stores what the pickle hands it, allows
   torch's own tensor-rebuild function, dtypes and a few builtin containers, and refuses every
   other global with a GraphFormatError that names it. The named module is never imported.

The dense ``[N, N]`` adjacency of the file is turned into the COO edge list at once.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from tracewire.errors import GraphFormatError, ResourceLimitError
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia_import import MAX_TARGET_VECTOR_VALUES
from tracewire.limits import MAX_D_MODEL, MAX_LAYERS, bounded_count, require_regular_file

logger = logging.getLogger(__name__)

#: Class names whose instances are read as inert records (module ignored, never imported).
STAND_IN_CLASS_NAMES = frozenset({"LogitTarget", "CustomTarget", "UnifiedConfig", "HookedTransformerConfig"})
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
}
_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_CONVERSION_HINT = (
    "to convert it, load it with circuit-tracer in an environment you trust and re-save it with "
    "torch.save({key: value for key, value in vars(graph).items() if key != 'cfg'} | "
    "{'cfg': dataclasses.asdict(graph.cfg)}, path), which this importer reads with weights_only=True"
)


class PickledRecord(tuple):
    """Inert stand-in for a pickled object of an allow-listed class name.

    Positional constructor arguments (a NamedTuple's fields) are the tuple's items; state set by
    the pickle (a dataclass's fields) lands in :attr:`fields`. It has no other behaviour.
    """

    fields: dict[str, Any]

    def __new__(cls, *args: Any) -> PickledRecord:
        record = super().__new__(cls, args)
        record.fields = {}
        return record

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            for part in state:
                if isinstance(part, Mapping):
                    self.fields.update(part)
        elif isinstance(state, Mapping):
            self.fields.update(state)

    def get(self, name: str, position: int | None = None, default: Any = None) -> Any:
        """A field by name (dataclass state) or by position (NamedTuple item)."""
        if name in self.fields:
            return self.fields[name]
        if position is not None and position < len(self):
            return self[position]
        return default


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global that the restricted unpickler does not allow."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refused global {module}.{name}")
        self.global_name = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles (torch.save's) spell Python 3's builtins module the Python 2 way.
        module = _PYTHON2_MODULES.get(module, module)
        if name in STAND_IN_CLASS_NAMES:
            return PickledRecord
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise RefusedGlobalError(module, name)


def _restricted_load(file: BinaryIO, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: A ``pickle_module`` for ``torch.load``: torch builds its unpickler from ``Unpickler``.
RESTRICTED_PICKLE = types.SimpleNamespace(
    Unpickler=RestrictedUnpickler, load=_restricted_load, __name__="tracewire_restricted_pickle"
)


def load_circuit_tracer_pt(path: str | os.PathLike[str], *, tokenizer: Any | None = None) -> Graph:
    """Read a circuit-tracer ``.pt`` graph without executing code from it.

    ``tokenizer`` (anything with ``decode(list[int]) -> str``) decodes the prompt tokens, which
    the file does not store as strings; without it they read ``"<token_id>"``. Target vectors are
    not in the file and come back as zeros of width ``cfg.d_model``.
    """
    name = os.fspath(path)
    if not Path(name).exists():
        raise FileNotFoundError(f"graph file {name} does not exist")
    require_regular_file(name, what="graph file", error=GraphFormatError)
    raw = _load(name)
    if not isinstance(raw, Mapping):
        raise GraphFormatError(f"{name}: holds a {type(raw).__name__}; expected circuit-tracer's graph dict")
    try:
        return _convert(raw, name, tokenizer)
    except (IndexError, RuntimeError, TypeError, ValueError, OverflowError) as exc:
        # Tensors of the wrong dtype or indices out of range surface as torch errors; name the file.
        raise GraphFormatError(
            f"{name}: inconsistent circuit-tracer graph ({type(exc).__name__}: {exc})"
        ) from exc


def _load(name: str) -> Any:
    try:
        return torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        logger.debug("%s needs more than weights_only allows (%s); using the restricted unpickler", name, exc)
    except Exception as exc:
        raise GraphFormatError(f"{name}: not a readable torch file ({type(exc).__name__}: {exc})") from exc
    try:
        return torch.load(name, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
    except RefusedGlobalError as exc:
        raise GraphFormatError(
            f"{name}: the pickle asks for {exc.global_name}, which is not a circuit-tracer graph type and "
            f"could run code, so it was not loaded; {_CONVERSION_HINT}"
        ) from exc
    except Exception as exc:
        raise GraphFormatError(
            f"{name}: not a readable circuit-tracer graph ({type(exc).__name__}: {exc})"
        ) from exc


def _convert(raw: Mapping[str, Any], name: str, tokenizer: Any | None) -> Graph:
    def tensor(key: str, ndim: int) -> torch.Tensor:
        value = raw.get(key)
        if not isinstance(value, torch.Tensor) or value.ndim != ndim:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise GraphFormatError(f"{name}: '{key}' is {found}; expected a {ndim}-d tensor")
        return value

    tokens = tensor("input_tokens", 1).long()
    active = tensor("active_features", 2).long()
    selected = tensor("selected_features", 1).long()
    activation_values = tensor("activation_values", 1)
    adjacency = tensor("adjacency_matrix", 2)
    probabilities = tensor("logit_probabilities", 1)
    cfg = raw.get("cfg")
    config = _config_fields(cfg)

    n_pos, n_features, n_targets = int(tokens.shape[0]), int(selected.shape[0]), int(probabilities.shape[0])
    n_nodes = int(adjacency.shape[0])
    if adjacency.shape[1] != n_nodes:
        raise GraphFormatError(
            f"{name}: 'adjacency_matrix' has shape {tuple(adjacency.shape)}; expected square"
        )
    n_layers = config.get("n_layers")
    if isinstance(n_layers, int) and not isinstance(n_layers, bool):
        bounded_count(n_layers, name="cfg.n_layers", where=name, limit=MAX_LAYERS)
    else:
        n_layers, remainder = divmod(n_nodes - n_features - n_pos - n_targets, n_pos) if n_pos else (0, 1)
        if remainder:
            raise GraphFormatError(
                f"{name}: cannot infer n_layers from {n_nodes} nodes; 'cfg' has no n_layers"
            )
    expected_nodes = n_features + (n_layers + 1) * n_pos + n_targets
    if n_nodes != expected_nodes:
        raise GraphFormatError(
            f"{name}: 'adjacency_matrix' is {n_nodes}x{n_nodes}; expected {expected_nodes} nodes "
            f"({n_features} features + ({n_layers} layers + 1) x {n_pos} positions + {n_targets} targets)"
        )

    vocab_size = raw.get("vocab_size", config.get("d_vocab"))
    labels, target_ids = _targets(raw, name, n_targets, vocab_size, tokenizer)
    edge_targets, edge_sources = torch.nonzero(adjacency, as_tuple=True)
    d_model_value = config.get("d_model")
    d_model = 0
    if isinstance(d_model_value, int) and not isinstance(d_model_value, bool):
        d_model = bounded_count(d_model_value, name="cfg.d_model", where=name, limit=MAX_D_MODEL)
    if n_targets * d_model > MAX_TARGET_VECTOR_VALUES:
        raise ResourceLimitError(
            f"{name}: {n_targets} targets x cfg.d_model={d_model} exceeds {MAX_TARGET_VECTOR_VALUES} "
            "target-vector values; refused before allocating"
        )
    scan = raw.get("scan")
    metadata: dict[str, Any] = {
        "source_format": "circuit-tracer-pt",
        "model_id": config.get("model_name") or config.get("tokenizer_name"),
        "scan": scan if isinstance(scan, str | list) else None,
        "d_model": d_model,
        "circuit_tracer_cfg": config,
    }
    if isinstance(vocab_size, int):
        metadata["vocab_size"] = vocab_size
    return Graph(
        prompt=str(raw.get("input_string", "")),
        tokens=tokens,
        token_strings=[_decode(tokenizer, token) for token in tokens.tolist()],
        n_layers=n_layers,
        features=active[selected],
        activations=activation_values[selected],
        target_labels=labels,
        target_token_ids=torch.tensor(target_ids, dtype=torch.long),
        target_probabilities=probabilities,
        target_vectors=torch.zeros(n_targets, d_model, dtype=probabilities.dtype),
        edge_targets=edge_targets,
        edge_sources=edge_sources,
        edge_weights=adjacency[edge_targets, edge_sources],
        metadata=metadata,
    )


def _targets(
    raw: Mapping[str, Any], name: str, n_targets: int, vocab_size: Any, tokenizer: Any | None
) -> tuple[list[str], list[int]]:
    """Labels and token ids (-1 for virtual ids past the vocabulary) of the logit targets."""
    targets = raw.get("logit_targets", raw.get("logit_tokens"))
    if isinstance(targets, torch.Tensor):  # older files: a tensor of vocab ids
        entries = [(_decode(tokenizer, int(vocab)), int(vocab)) for vocab in targets.tolist()]
    elif isinstance(targets, list | tuple):
        entries = []
        for target in targets:
            if isinstance(target, PickledRecord):
                entries.append((str(target.get("token_str", 0)), int(target.get("vocab_idx", 1))))
            elif isinstance(target, tuple | list) and len(target) >= 2:
                entries.append((str(target[0]), int(target[1])))
            else:
                raise GraphFormatError(f"{name}: logit target {target!r} is not (token_str, vocab_idx)")
    else:
        raise GraphFormatError(
            f"{name}: 'logit_targets' is {type(targets).__name__}; expected a list or tensor"
        )
    if len(entries) != n_targets:
        raise GraphFormatError(f"{name}: {len(entries)} logit targets but {n_targets} logit probabilities")
    is_real = (lambda vocab: vocab < vocab_size) if isinstance(vocab_size, int) else (lambda vocab: True)
    return [label for label, _ in entries], [vocab if is_real(vocab) else -1 for _, vocab in entries]


def _config_fields(cfg: Any) -> dict[str, Any]:
    """The config's JSON-safe fields (dtypes as strings), whatever form the file stores it in."""
    if isinstance(cfg, PickledRecord):
        fields: Mapping[str, Any] = cfg.fields
    elif isinstance(cfg, Mapping):
        fields = cfg
    else:
        return {}
    safe: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, torch.dtype):
            safe[str(key)] = str(value)
        elif value is None or isinstance(value, str | int | float | bool):
            safe[str(key)] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float | bool) for v in value):
            safe[str(key)] = list(value)
    return safe


def _decode(tokenizer: Any | None, token: int) -> str:
    if tokenizer is None:
        return f"<{token}>"
    return str(tokenizer.decode([token]))
