"""The attribution graph of one prompt, stored sparsely.

Node index space (the same order as circuit-tracer, so graphs and node numbers are comparable)::

    [ features (F) | errors (n_layers * n_pos) | tokens (n_pos) | targets (K) ]

- feature node ``i`` (``0 <= i < F``) is row ``i`` of ``features`` = (layer, pos, feature_id);
- the error node of (layer, pos) is ``F + layer * n_pos + pos`` (layer-major);
- the token (embedding) node of position ``pos`` is ``F + n_layers * n_pos + pos``;
- target ``k`` (a logit or a custom direction) is ``F + (n_layers + 1) * n_pos + k``.

Edges are a COO list: ``edge_weights[e]`` is the signed direct effect ``A[target, source]`` of node
``edge_sources[e]`` on node ``edge_targets[e]``. Rows of the adjacency are targets, columns
sources. Each (target, source) pair is expected once; :meth:`Graph.coalesce` merges duplicates.
Error and token nodes are sources only; targets are sinks only.

Nothing here ever builds an ``N x N`` dense matrix: long prompts give hundreds of thousands of
nodes, where a dense adjacency would not fit in memory.

On disk a graph is ONE ``.safetensors`` file (see ``docs/graph-format.md``): the tensors above, and
the strings and metadata as JSON in the safetensors header. Loading it never runs code, unlike the
pickled ``.pt`` files circuit-tracer writes.
"""

from __future__ import annotations

import enum
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from tracewire.atomic import atomic_write_bytes
from tracewire.errors import GraphFormatError
from tracewire.limits import MAX_LAYERS, check_finite, require_regular_file

FORMAT_NAME = "tracewire-graph"
FORMAT_VERSION = 1

#: Tensors stored in the file, in the order they are written.
TENSOR_FIELDS: tuple[str, ...] = (
    "tokens",
    "features",
    "activations",
    "target_token_ids",
    "target_probabilities",
    "target_vectors",
    "edge_targets",
    "edge_sources",
    "edge_weights",
)
#: Non-tensor fields, stored as JSON strings in the safetensors header.
HEADER_FIELDS: tuple[str, ...] = ("prompt", "token_strings", "target_labels", "n_layers", "metadata")
_FLOAT_FIELDS = ("activations", "target_probabilities", "target_vectors", "edge_weights")


class NodeKind(enum.IntEnum):
    """What a node stands for; the values are what :meth:`Graph.node_kinds` returns."""

    FEATURE = 0
    ERROR = 1
    TOKEN = 2
    TARGET = 3


@dataclass(eq=False)
class Graph:
    """Sparse attribution graph of one prompt (node order in the module docstring).

    The constructor checks shapes, dtypes and index ranges and raises
    :class:`~tracewire.errors.GraphFormatError` naming the field at fault, so a malformed graph is
    caught where it is made rather than deep inside pruning.
    """

    prompt: str
    tokens: torch.Tensor  # int64 [n_pos]
    token_strings: list[str]
    n_layers: int
    features: torch.Tensor  # int64 [F, 3]: (layer, pos, feature_id)
    activations: torch.Tensor  # float [F]
    target_labels: list[str]
    target_token_ids: torch.Tensor  # int64 [K], -1 for custom directions
    target_probabilities: torch.Tensor  # float [K]
    target_vectors: torch.Tensor  # float [K, d_model]
    edge_targets: torch.Tensor  # int64 [E]
    edge_sources: torch.Tensor  # int64 [E]
    edge_weights: torch.Tensor  # float [E]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Optional extra tensors (e.g. ``attention.loadings.*``), stored under their own names.
    sections: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ sizes and offsets
    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_tokens(self) -> int:
        return self.n_pos

    @property
    def n_targets(self) -> int:
        return int(self.target_token_ids.shape[0])

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_tokens + self.n_targets

    @property
    def n_edges(self) -> int:
        return int(self.edge_weights.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.target_vectors.shape[1])

    @property
    def error_offset(self) -> int:
        """Index of the first error node (= number of features)."""
        return self.n_features

    @property
    def token_offset(self) -> int:
        """Index of the first token node."""
        return self.n_features + self.n_errors

    @property
    def target_offset(self) -> int:
        """Index of the first target node."""
        return self.token_offset + self.n_tokens

    def error_index(self, layer: int, pos: int) -> int:
        """Node index of the error node at (layer, pos)."""
        if not (0 <= layer < self.n_layers and 0 <= pos < self.n_pos):
            raise IndexError(
                f"error node ({layer}, {pos}) outside {self.n_layers} layers x {self.n_pos} positions"
            )
        return self.error_offset + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        """Node index of the token (embedding) node at ``pos``."""
        if not 0 <= pos < self.n_pos:
            raise IndexError(f"token position {pos} outside 0..{self.n_pos - 1}")
        return self.token_offset + pos

    def target_index(self, k: int) -> int:
        """Node index of target ``k``."""
        if not 0 <= k < self.n_targets:
            raise IndexError(f"target {k} outside 0..{self.n_targets - 1}")
        return self.target_offset + k

    # ------------------------------------------------------------------ node properties
    def node_kind(self, index: int) -> NodeKind:
        """Kind of one node."""
        if not 0 <= index < self.n_nodes:
            raise IndexError(f"node {index} outside 0..{self.n_nodes - 1}")
        if index < self.error_offset:
            return NodeKind.FEATURE
        if index < self.token_offset:
            return NodeKind.ERROR
        if index < self.target_offset:
            return NodeKind.TOKEN
        return NodeKind.TARGET

    def node_kinds(self) -> torch.Tensor:
        """``int8 [N]`` of :class:`NodeKind` values, one per node."""
        kinds = torch.empty(self.n_nodes, dtype=torch.int8)
        kinds[: self.error_offset] = NodeKind.FEATURE
        kinds[self.error_offset : self.token_offset] = NodeKind.ERROR
        kinds[self.token_offset : self.target_offset] = NodeKind.TOKEN
        kinds[self.target_offset :] = NodeKind.TARGET
        return kinds

    def node_layer_pos(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(layer, pos)`` int64 ``[N]`` arrays for layout and re-attribution.

        Features use their own (encoder) layer and position, errors theirs; tokens get layer -1
        (below layer 0) and targets layer ``n_layers`` at the last position, i.e. tokens at the
        bottom and targets at the top of a plot.
        """
        error_layer = torch.arange(self.n_layers).repeat_interleave(self.n_pos)
        error_pos = torch.arange(self.n_pos).repeat(self.n_layers)
        layer = torch.cat(
            [
                self.features[:, 0],
                error_layer,
                torch.full((self.n_tokens,), -1, dtype=torch.long),
                torch.full((self.n_targets,), self.n_layers, dtype=torch.long),
            ]
        )
        pos = torch.cat(
            [
                self.features[:, 1],
                error_pos,
                torch.arange(self.n_pos),
                torch.full((self.n_targets,), self.n_pos - 1, dtype=torch.long),
            ]
        )
        return layer, pos

    def feature_error_indices(self) -> torch.Tensor:
        """int64 ``[F]``: the error node at each feature's own (layer, pos).

        This is where a feature's outgoing edges go when the feature is folded into the error
        (subgraph scores, pruned-graph evaluation).
        """
        return self.error_offset + self.features[:, 0] * self.n_pos + self.features[:, 1]

    # ------------------------------------------------------------------ adjacency
    def adjacency_csr(self) -> torch.Tensor:
        """Sparse CSR ``[N, N]`` adjacency, rows = targets, columns = sources (duplicates summed)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return self._adjacency_coo().to_sparse_csr()

    def coalesce(self) -> Graph:
        """Copy with edges sorted by (target, source) and duplicate pairs summed."""
        coo = self._adjacency_coo()
        indices = coo.indices()
        return replace(
            self,
            edge_targets=indices[0].clone(),
            edge_sources=indices[1].clone(),
            edge_weights=coo.values().clone(),
            metadata=dict(self.metadata),
        )

    def _adjacency_coo(self) -> torch.Tensor:
        return torch.sparse_coo_tensor(
            torch.stack([self.edge_targets, self.edge_sources]),
            self.edge_weights,
            (self.n_nodes, self.n_nodes),
            check_invariants=True,
        ).coalesce()

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Graph:
        """Copy with floating tensors cast to ``dtype`` and everything moved to ``device``."""
        changes: dict[str, Any] = {}
        for name in TENSOR_FIELDS:
            value: torch.Tensor = getattr(self, name)
            target_dtype = dtype if (dtype is not None and name in _FLOAT_FIELDS) else value.dtype
            changes[name] = value.to(device=device, dtype=target_dtype)
        return replace(self, metadata=dict(self.metadata), **changes)

    # ------------------------------------------------------------------ comparison
    def diff(self, other: Graph, *, atol: float = 0.0) -> list[str]:
        """Human-readable differences to ``other`` (empty when equal).

        ``atol=0`` demands bit-identical tensors (same dtype too); a positive ``atol`` compares
        floating tensors with that tolerance. Meant for tests and round-trip checks.
        """
        differences: list[str] = []
        for name in HEADER_FIELDS:
            if getattr(self, name) != getattr(other, name):
                differences.append(f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}")
        for name in TENSOR_FIELDS:
            mine: torch.Tensor = getattr(self, name)
            theirs: torch.Tensor = getattr(other, name)
            if mine.shape != theirs.shape:
                differences.append(f"{name}: shape {tuple(mine.shape)} != {tuple(theirs.shape)}")
            elif atol == 0.0:
                if mine.dtype != theirs.dtype:
                    differences.append(f"{name}: dtype {mine.dtype} != {theirs.dtype}")
                elif not _same_bits(mine, theirs):
                    differences.append(f"{name}: values differ")
            elif not torch.allclose(mine.double(), theirs.double(), atol=atol, rtol=0.0, equal_nan=True):
                differences.append(f"{name}: values differ by more than {atol}")
        return differences

    def equals(self, other: Graph, *, atol: float = 0.0) -> bool:
        """True when :meth:`diff` finds nothing."""
        return not self.diff(other, atol=atol)

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "graph") -> None:
        """Check shapes, dtypes and index ranges; raise GraphFormatError naming the field.

        ``source`` names where the graph came from (a file path) in the message.
        """
        for problem in _problems(self):
            raise GraphFormatError(f"{source}: {problem}")

    def show(self, **options: Any) -> Any:
        """The explorer for this graph, inline in Jupyter (:func:`tracewire.notebook.show`)."""
        from tracewire.notebook import show  # the display layer sits above the graph layer

        return show(self, **options)

    # ------------------------------------------------------------------ file format
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the graph to one ``.safetensors`` file, atomically; return the path."""
        header = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
        }
        for name in HEADER_FIELDS:
            try:
                header[name] = json.dumps(getattr(self, name), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise GraphFormatError(
                    f"cannot save graph to {os.fspath(path)}: field {name!r} is not JSON-serialisable ({exc})"
                ) from exc
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in TENSOR_FIELDS}
        for name, tensor in self.sections.items():
            if name in tensors:
                raise GraphFormatError(f"graph section {name!r} has the name of a graph field")
            tensors[name] = tensor.detach().cpu().contiguous()
        return atomic_write_bytes(path, safetensors_save(tensors, metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Graph:
        """Read a graph written by :meth:`save`. Never executes code from the file.

        Raises GraphFormatError naming the file and the problem for a corrupt or truncated file,
        a file of another format or a newer format version, a missing tensor or header field, or
        tensors of the wrong shape or dtype. A missing file raises FileNotFoundError.
        """
        name = os.fspath(path)
        if not Path(name).exists():
            raise FileNotFoundError(f"graph file {name} does not exist")
        require_regular_file(name, what="graph file", error=GraphFormatError)
        try:
            with safe_open(name, framework="pt") as reader:
                header = reader.metadata() or {}
                keys = set(reader.keys())
                _check_header(name, header)
                missing = [tensor for tensor in TENSOR_FIELDS if tensor not in keys]
                if missing:
                    raise GraphFormatError(
                        f"{name}: tensor(s) {missing} missing; a tracewire graph has {list(TENSOR_FIELDS)}"
                    )
                tensors = {tensor: reader.get_tensor(tensor) for tensor in TENSOR_FIELDS}
                sections = {extra: reader.get_tensor(extra) for extra in sorted(keys - set(TENSOR_FIELDS))}
        except GraphFormatError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise GraphFormatError(
                f"{name}: not a readable safetensors file ({type(exc).__name__}: {exc}); "
                "the file is corrupt or truncated"
            ) from exc
        values: dict[str, Any] = {}
        for header_field in HEADER_FIELDS:
            try:
                values[header_field] = json.loads(header[header_field])
            except json.JSONDecodeError as exc:
                raise GraphFormatError(
                    f"{name}: header field {header_field!r} is not valid JSON ({exc})"
                ) from exc
        _check_header_types(name, values)
        for extra, tensor in sections.items():  # optional sections (e.g. attention head loadings)
            check_finite(tensor, where=f"{name}: section tensor {extra!r}", error=GraphFormatError)
        try:
            return cls(**values, **tensors, sections=sections)
        except GraphFormatError as exc:
            raise GraphFormatError(f"{name}: {exc}") from exc


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality: NaN equals the same NaN, -0.0 differs from 0.0."""
    if a.numel() == 0:
        return True
    return torch.equal(
        a.detach().cpu().contiguous().view(torch.uint8), b.detach().cpu().contiguous().view(torch.uint8)
    )


def _check_header(name: str, header: dict[str, str]) -> None:
    found = header.get("format")
    if found != FORMAT_NAME:
        raise GraphFormatError(
            f"{name}: header __metadata__['format'] is {found!r}; "
            f"expected {FORMAT_NAME!r} (not a tracewire graph)"
        )
    version_text = header.get("format_version", "")
    try:
        version = int(version_text)
    except ValueError:
        raise GraphFormatError(f"{name}: format_version {version_text!r} is not an integer") from None
    if version != FORMAT_VERSION:
        newer = " (written by a newer tracewire; upgrade to read it)" if version > FORMAT_VERSION else ""
        raise GraphFormatError(
            f"{name}: unknown graph format_version {version}{newer}; "
            f"this tracewire reads version {FORMAT_VERSION}"
        )
    missing = [key for key in HEADER_FIELDS if key not in header]
    if missing:
        raise GraphFormatError(f"{name}: header field(s) {missing} missing from the safetensors __metadata__")


def _check_header_types(name: str, values: dict[str, Any]) -> None:
    expected: dict[str, type | tuple[type, ...]] = {
        "prompt": str,
        "token_strings": list,
        "target_labels": list,
        "n_layers": int,
        "metadata": dict,
    }
    for key, kind in expected.items():
        if not isinstance(values[key], kind) or isinstance(values[key], bool):
            raise GraphFormatError(
                f"{name}: header field {key!r} is {type(values[key]).__name__}; expected {kind}"
            )
    for key in ("token_strings", "target_labels"):
        if not all(isinstance(item, str) for item in values[key]):
            raise GraphFormatError(f"{name}: header field {key!r} must be a list of strings")


def _direction_problems(graph: Graph) -> Iterator[str]:
    """Errors and tokens are sources only, targets sinks only.

    This is also what catches an ``n_layers`` that disagrees with the node arrays: every error,
    token and target index depends on it, so an off-by-one turns edges into target nodes into
    edges into tokens (or out of range).
    """
    sinks_as_sources = graph.edge_sources >= graph.target_offset
    if bool(sinks_as_sources.any()):
        first = int(graph.edge_sources[sinks_as_sources][0])
        yield (
            f"field 'edge_sources' has target node {first} as a source; targets are sinks only "
            f"(is n_layers={graph.n_layers} consistent with the node arrays?)"
        )
    targets = graph.edge_targets
    sources_as_sinks = (targets >= graph.error_offset) & (targets < graph.target_offset)
    if bool(sources_as_sinks.any()):
        first = int(targets[sources_as_sinks][0])
        yield (
            f"field 'edge_targets' has error/token node {first} as a target; errors and tokens are "
            f"sources only (is n_layers={graph.n_layers} consistent with the node arrays?)"
        )


def _problems(graph: Graph) -> Iterator[str]:
    """Yield descriptions of what is wrong with ``graph`` (the first one is raised)."""
    tensor_specs: dict[str, tuple[int, bool]] = {  # name -> (ndim, integer?)
        "tokens": (1, True),
        "features": (2, True),
        "activations": (1, False),
        "target_token_ids": (1, True),
        "target_probabilities": (1, False),
        "target_vectors": (2, False),
        "edge_targets": (1, True),
        "edge_sources": (1, True),
        "edge_weights": (1, False),
    }
    for name, (ndim, integer) in tensor_specs.items():
        value = getattr(graph, name)
        if not isinstance(value, torch.Tensor):
            yield f"field {name!r} is {type(value).__name__}; expected a torch.Tensor"
            return
        if value.ndim != ndim:
            yield f"field {name!r} has shape {tuple(value.shape)}; expected {ndim} dimension(s)"
            return
        if integer and value.dtype != torch.int64:
            yield f"field {name!r} has dtype {value.dtype}; expected torch.int64"
            return
        if not integer and not value.is_floating_point():
            yield f"field {name!r} has dtype {value.dtype}; expected a floating dtype"
            return
    if not isinstance(graph.n_layers, int) or isinstance(graph.n_layers, bool) or graph.n_layers < 0:
        yield f"field 'n_layers' is {graph.n_layers!r}; expected a non-negative int"
        return
    if graph.n_layers > MAX_LAYERS:  # checked before anything sized n_layers * n_pos is built
        yield f"field 'n_layers' is {graph.n_layers}; expected at most {MAX_LAYERS}"
        return
    if not isinstance(graph.metadata, dict):
        yield f"field 'metadata' is {type(graph.metadata).__name__}; expected a dict"
        return
    n_features, n_pos, n_targets, n_edges = graph.n_features, graph.n_pos, graph.n_targets, graph.n_edges
    shape_rules = [
        ("features", (n_features, 3), "(F, 3)"),
        ("activations", (n_features,), "(F,) with F = features.shape[0]"),
        ("target_probabilities", (n_targets,), "(K,) with K = target_token_ids.shape[0]"),
        ("edge_sources", (n_edges,), "(E,) with E = edge_weights.shape[0]"),
        ("edge_targets", (n_edges,), "(E,) with E = edge_weights.shape[0]"),
    ]
    for name, shape, meaning in shape_rules:
        if tuple(getattr(graph, name).shape) != shape:
            found = tuple(getattr(graph, name).shape)
            yield f"field {name!r} has shape {found}; expected {meaning} = {shape}"
            return
    if graph.target_vectors.shape[0] != n_targets:
        yield (
            f"field 'target_vectors' has shape {tuple(graph.target_vectors.shape)}; "
            f"expected (K, d_model) with K = {n_targets}"
        )
        return
    if len(graph.token_strings) != n_pos:
        count = len(graph.token_strings)
        yield f"field 'token_strings' has {count} entries; expected one per token ({n_pos})"
    if len(graph.target_labels) != n_targets:
        count = len(graph.target_labels)
        yield f"field 'target_labels' has {count} entries; expected one per target ({n_targets})"
    if n_features:
        layers, positions = graph.features[:, 0], graph.features[:, 1]
        if int(layers.min()) < 0 or int(layers.max()) >= graph.n_layers:
            found_range = f"{int(layers.min())}..{int(layers.max())}"
            yield f"field 'features' has layers {found_range}; expected 0..{graph.n_layers - 1}"
        if int(positions.min()) < 0 or int(positions.max()) >= n_pos:
            found_range = f"{int(positions.min())}..{int(positions.max())}"
            yield f"field 'features' has positions {found_range}; expected 0..{n_pos - 1}"
        if int(graph.features[:, 2].min()) < 0:
            yield "field 'features' has a negative feature id"
    if n_edges:
        n_nodes = graph.n_nodes
        for name in ("edge_targets", "edge_sources"):
            indices = getattr(graph, name)
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= n_nodes:
                yield f"field {name!r} has node indices {low}..{high}; expected 0..{n_nodes - 1}"
        yield from _direction_problems(graph)
    for name in _FLOAT_FIELDS:
        values = getattr(graph, name)
        if values.numel() and not bool(torch.isfinite(values).all()):
            yield f"field {name!r} contains NaN or infinite values"
    for name in ("tokens", "target_token_ids"):
        values = getattr(graph, name)
        if values.numel() and int(values.min()) < -1:
            yield f"field {name!r} has value {int(values.min())}; expected ids >= 0 (-1: unknown/custom)"
