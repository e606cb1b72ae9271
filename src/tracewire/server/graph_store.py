"""Loaded graphs, kept while their file is unchanged: views by pruning threshold, scores, saves.

A ``.safetensors`` graph is the full attribution graph; a view prunes it with
:func:`~tracewire.graph.prune_graph` at the requested node / edge thresholds and exports it with
:func:`~tracewire.graph.to_neuronpedia_json`, so the browser only receives what survives pruning.
A Neuronpedia JSON file is already pruned; a threshold there filters its nodes by their stored
cumulative ``influence`` (the rule of the frontend's pruning slider).

Subgraph scores always use the graph behind the file (for ``.safetensors``: the unpruned one),
with one cached :class:`~tracewire.graph.ScoreContext` per graph, so each request costs a few
vector operations. Saving ``qParams`` rewrites the file atomically (``.safetensors``: into the
graph's metadata under ``"qParams"``, which an export then writes into the JSON), and the cache
notices the new file by its modification time and size.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from tracewire.atomic import atomic_write_bytes
from tracewire.errors import GraphFormatError, InvalidArgumentError, ResourceLimitError
from tracewire.graph.graph import Graph
from tracewire.graph.neuronpedia import dumps, from_neuronpedia_json, to_neuronpedia_json
from tracewire.graph.neuronpedia_ids import IMPORT_KEY, node_ids
from tracewire.graph.pruning import prune_graph
from tracewire.graph.scores import ScoreContext
from tracewire.graph.scores import finite_or_none as _finite
from tracewire.limits import read_maybe_gzip
from tracewire.server.graph_files import GraphDirectory, GraphFile
from tracewire.server.graph_view import GraphView, finite_or_null
from tracewire.server.kept_nodes import keep_nodes, kept_positions

#: Pruning defaults for .safetensors graphs (circuit-tracer's and tracewire's export defaults).
DEFAULT_NODE_THRESHOLD = 0.8
DEFAULT_EDGE_THRESHOLD = 0.98
#: The metadata key of a .safetensors graph that holds the saved frontend state.
Q_PARAMS_KEY = "qParams"
#: How long a scores request waits for the whole-graph scores before answering without them.
FULL_SCORES_WAIT_S = 0.5
_VIEWS_PER_GRAPH = 4
#: A view's cache key: node threshold, edge threshold, kept node ids.
ViewKey = tuple[float | None, float | None, tuple[str, ...]]
_GRAPHS_KEPT = 4


class UnknownNodesError(InvalidArgumentError):
    """Node ids that the graph does not have (a 422 for the client)."""

    def __init__(self, unknown: Sequence[str]) -> None:
        shown = ", ".join(repr(node) for node in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        super().__init__(f"unknown node id(s) {shown}{more}")
        self.unknown = list(unknown)


class LoadedGraph:
    """One graph file in memory; every method is safe to call from several threads."""

    def __init__(self, file: GraphFile, stamp: tuple[int, int]) -> None:
        self.file = file
        self.stamp = stamp
        self._lock = threading.RLock()
        self._views: OrderedDict[ViewKey, GraphView] = OrderedDict()
        self._graph: Graph | None = None
        self._document: dict[str, Any] | None = None
        self._context: ScoreContext | None = None
        self._id_index: dict[str, int] | None = None
        self._full_scores: tuple[float | None, float | None] | None = None
        self._full_thread: threading.Thread | None = None
        if file.kind == "tracewire":
            self._graph = Graph.load(file.path)
        else:
            self._document = read_document(file)

    @property
    def kind(self) -> str:
        return self.file.kind

    # ---------------------------------------------------------------------------------- views
    def view(
        self, node_threshold: float | None, edge_threshold: float | None, keep: tuple[str, ...] = ()
    ) -> GraphView:
        """The nodes and links to show (cached per thresholds and kept node ids)."""
        if self.kind == "tracewire":
            node_threshold = DEFAULT_NODE_THRESHOLD if node_threshold is None else node_threshold
            edge_threshold = DEFAULT_EDGE_THRESHOLD if edge_threshold is None else edge_threshold
        else:
            edge_threshold = None  # a JSON file's links are what they are
        key = (node_threshold, edge_threshold, keep)
        with self._lock:
            cached = self._views.get(key)
            if cached is not None:
                self._views.move_to_end(key)
                return cached
            view = self._build_view(node_threshold, edge_threshold, keep)
            self._views[key] = view
            while len(self._views) > _VIEWS_PER_GRAPH:
                self._views.popitem(last=False)
            return view

    def _build_view(
        self, node_threshold: float | None, edge_threshold: float | None, keep: tuple[str, ...]
    ) -> GraphView:
        if self._graph is not None and self.kind == "tracewire":
            assert node_threshold is not None and edge_threshold is not None
            graph = self._graph
            prune = prune_graph(graph, node_threshold, edge_threshold)
            prune = keep_nodes(graph, prune, kept_positions(self._node_index(), keep))
            stored = graph.metadata.get(Q_PARAMS_KEY)
            document = to_neuronpedia_json(
                graph,
                self.file.slug,
                prune=prune,
                q_params=stored if isinstance(stored, dict) else None,
            )
            document["metadata"]["pruning_settings"] = {
                "node_threshold": node_threshold,
                "edge_threshold": edge_threshold,
            }
            view = GraphView.from_document(document, self.file.path.name)
            view.settings = {"node_threshold": node_threshold, "edge_threshold": edge_threshold}
            return view
        assert self._document is not None
        view = GraphView.from_document(self._document, self.file.path.name)
        return view if node_threshold is None else view.filtered(node_threshold, kept_ids=set(keep))

    # --------------------------------------------------------------------------------- scores
    def graph(self) -> Graph:
        """The graph behind the file (imported from the JSON on first use)."""
        with self._lock:
            if self._graph is None:
                assert self._document is not None
                try:
                    self._graph = from_neuronpedia_json(self._document)
                except ResourceLimitError as exc:  # answered like any other bad file
                    raise GraphFormatError(str(exc)) from exc
            return self._graph

    def node_indices(self, ids: Sequence[str]) -> list[int]:
        """Graph node index of each node id; UnknownNodesError lists ids the graph lacks."""
        index = self._node_index()
        unknown = [node for node in ids if node not in index]
        if unknown:
            raise UnknownNodesError(unknown)
        return [index[node] for node in ids]

    def _node_index(self) -> dict[str, int]:
        with self._lock:
            if self._id_index is None:
                graph = self.graph()
                if self._document is not None:
                    listed = graph.metadata[IMPORT_KEY]["nodes"]
                    ids = [str(node["node_id"]) for node in self._document["nodes"]]
                    self._id_index = dict(zip(ids, listed))
                else:
                    self._id_index = {node: i for i, node in enumerate(node_ids(graph))}
            return self._id_index

    def subgraph_scores(self, pinned_ids: Sequence[str]) -> dict[str, Any]:
        """Replacement / completeness with the pinned features kept, and of the whole graph.

        The whole graph's scores take a full influence propagation (seconds for millions of
        edges), so they are computed once in the background; until then ``full_graph`` is None.
        """
        indices = self.node_indices(pinned_ids)
        context = self._score_context()
        scores = context.subgraph_scores(indices)
        n_features = sum(1 for index in set(indices) if index < context.n_features)
        return {
            "replacement": _finite(scores.replacement),
            "completeness": _finite(scores.completeness),
            "n_pinned_features": n_features,
            "full_graph": self._whole_graph_scores(context),
        }

    def _whole_graph_scores(self, context: ScoreContext) -> dict[str, float | None] | None:
        with self._lock:
            if self._full_scores is None and self._full_thread is None:
                self._full_thread = threading.Thread(
                    target=self._compute_full_scores, args=(context,), name="graph-scores", daemon=True
                )
                self._full_thread.start()
            thread = self._full_thread
        if thread is not None:
            thread.join(timeout=FULL_SCORES_WAIT_S)  # small graphs: answered in this request
        with self._lock:
            if self._full_scores is None:
                return None
            return {"replacement": self._full_scores[0], "completeness": self._full_scores[1]}

    def _compute_full_scores(self, context: ScoreContext) -> None:
        full = context.graph_scores()
        with self._lock:
            self._full_scores = (_finite(full.replacement), _finite(full.completeness))

    def _score_context(self) -> ScoreContext:
        with self._lock:
            if self._context is None:
                self._context = ScoreContext(self.graph())
            return self._context

    # ------------------------------------------------------------------------------- steering
    def token_ids(self) -> list[int]:
        """The prompt's token ids (BOS included, as the graph has them)."""
        return [int(token) for token in self.graph().tokens.tolist()]

    def q_params(self) -> dict[str, Any]:
        if self._document is not None:
            stored = self._document.get("qParams")
        else:
            assert self._graph is not None
            stored = self._graph.metadata.get(Q_PARAMS_KEY)
        return dict(stored) if isinstance(stored, dict) else {}


class GraphStore:
    """Graph files of one directory, loaded on demand and kept while unchanged (a small LRU)."""

    def __init__(self, directory: GraphDirectory) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedGraph] = OrderedDict()
        self._file_locks: dict[str, threading.Lock] = {}

    def get(self, file: GraphFile) -> LoadedGraph:
        """The loaded graph of ``file``, reloaded when the file changed on disk."""
        stamp = file.stamp()
        with self._lock:
            loaded = self._loaded.get(file.slug)
            if loaded is not None and loaded.stamp == stamp and loaded.file == file:
                self._loaded.move_to_end(file.slug)
                return loaded
            lock = self._file_locks.setdefault(file.slug, threading.Lock())
        with lock:  # one load per file at a time; others wait and reuse it
            with self._lock:
                loaded = self._loaded.get(file.slug)
                if loaded is not None and loaded.stamp == stamp and loaded.file == file:
                    return loaded
            loaded = LoadedGraph(file, stamp)
            with self._lock:
                self._loaded[file.slug] = loaded
                while len(self._loaded) > _GRAPHS_KEPT:
                    self._loaded.popitem(last=False)
            return loaded

    def save_q_params(self, file: GraphFile, q_params: dict[str, Any]) -> dict[str, Any]:
        """Write ``q_params`` into the file atomically; return what was stored."""
        with self._lock:
            lock = self._file_locks.setdefault(file.slug, threading.Lock())
        with lock:
            stored = json.loads(json.dumps(finite_or_null(q_params)))  # a plain JSON copy
            if file.kind == "tracewire":
                graph = Graph.load(file.path)
                graph.metadata[Q_PARAMS_KEY] = stored
                graph.save(file.path)
            else:
                document = read_document(file)
                document["qParams"] = stored
                data = dumps(document).encode("utf-8")
                if file.path.name.endswith(".gz"):
                    data = gzip.compress(data, mtime=0)
                atomic_write_bytes(file.path, data)
            with self._lock:
                self._loaded.pop(file.slug, None)
            return stored


MAX_SERVED_BYTES = 64 * 1024 * 1024
"""Largest graph JSON the server parses, as stored and after decompression (a gzip bomb stops here)."""


def read_document(file: GraphFile) -> dict[str, Any]:
    """A Neuronpedia JSON file (``.json`` or ``.json.gz``) as a dict; GraphFormatError if it is not."""
    try:
        raw = read_maybe_gzip(
            file.path, max_bytes=MAX_SERVED_BYTES, decompressed_limit=MAX_SERVED_BYTES, error=GraphFormatError
        )
    except ResourceLimitError as exc:
        raise GraphFormatError(f"{file.path.name}: {exc}") from exc
    try:
        document = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise GraphFormatError(
            f"{file.path.name}: not a readable graph JSON ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(document, dict):
        raise GraphFormatError(
            f"{file.path.name}: top level is {type(document).__name__}; expected an object"
        )
    for key, kind in (("metadata", dict), ("nodes", list), ("links", list)):
        if not isinstance(document.get(key), kind):
            raise GraphFormatError(f"{file.path.name}: field {key!r} is missing or not a {kind.__name__}")
    return document
