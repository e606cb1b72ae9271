"""Attribution graphs: the sparse Graph, its file format, pruning, scores and Neuronpedia JSON.

- ``graph``: :class:`Graph` (node order ``[features | errors | tokens | targets]``, COO edges),
  ``Graph.save`` / ``Graph.load`` (one ``.safetensors`` file, no pickle);
- ``influence``: node influence ``wᵀ(Â + Â² + …)`` by sparse products;
- ``pruning``: :func:`prune_graph` (cumulative-influence node and edge thresholds), :func:`subgraph`;
- ``scores``: replacement / completeness of a graph and of node subsets (:class:`ScoreContext`);
- ``neuronpedia``: JSON for the Neuronpedia / attribution-graph frontend, both ways;
- ``compare`` / ``aggregate``: two graphs' differences; many prompts' graphs merged, the common circuit;
- ``circuit_tracer_pt``: circuit-tracer ``.pt`` graphs, read without executing pickled code.

The file formats are described in ``docs/graph-format.md``.
"""

from tracewire.graph.aggregate import Aggregate, aggregate_graphs
from tracewire.graph.circuit_tracer_pt import load_circuit_tracer_pt
from tracewire.graph.compare import GraphComparison, compare_graphs
from tracewire.graph.graph import Graph, NodeKind
from tracewire.graph.influence import node_influence
from tracewire.graph.neuronpedia import (
    from_neuronpedia_json,
    neuronpedia_schema,
    to_neuronpedia_json,
    update_graph_metadata,
    write_graph_files,
)
from tracewire.graph.pruning import PruneResult, find_threshold, keep_all, prune_graph, subgraph
from tracewire.graph.scores import ScoreContext, Scores, graph_scores, subgraph_scores

__all__ = [
    "Aggregate",
    "Graph",
    "GraphComparison",
    "NodeKind",
    "PruneResult",
    "ScoreContext",
    "Scores",
    "aggregate_graphs",
    "compare_graphs",
    "find_threshold",
    "from_neuronpedia_json",
    "graph_scores",
    "keep_all",
    "load_circuit_tracer_pt",
    "neuronpedia_schema",
    "node_influence",
    "prune_graph",
    "subgraph",
    "subgraph_scores",
    "to_neuronpedia_json",
    "update_graph_metadata",
    "write_graph_files",
]
