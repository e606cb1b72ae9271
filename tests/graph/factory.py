"""Random but valid attribution graphs for tests (shared with the attribution and UI tests).

``random_graph`` builds a causal DAG in tracewire's node order: an edge goes from a source at an
earlier layer and an earlier-or-same position to a later target; tokens are at the bottom
(sources only), error nodes are sources only, targets are at the top (sinks, reading the last
position). Every feature gets at least one incoming edge (from its own token) and at least one
outgoing edge (to a target), like features of a real graph.

Edges are sampled block by block, so large graphs (a few thousand nodes, ~10⁵ edges) build in
well under a second without an ``N x N`` matrix.
"""

from __future__ import annotations

import torch

from tracewire.graph.graph import Graph

_ROWS_PER_BLOCK = 512


def random_graph(
    n_layers: int = 3,
    n_pos: int = 4,
    n_features: int = 20,
    n_targets: int = 2,
    edge_density: float = 0.3,
    seed: int = 0,
    *,
    d_model: int = 8,
    vocab_size: int = 1000,
    n_custom_targets: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Graph:
    """A valid random Graph; the same arguments always give the same graph.

    ``edge_density`` is the probability of each causally allowed (target, source) pair; the last
    ``n_custom_targets`` targets are custom directions (token id -1).
    """
    if n_layers < 1 or n_pos < 1:
        raise ValueError("random_graph needs at least one layer and one position")
    generator = torch.Generator().manual_seed(seed)
    width = max(16, 4 * n_features // (n_layers * n_pos) + 1)
    flat = torch.randperm(n_layers * n_pos * width, generator=generator)[:n_features].sort().values
    features = torch.stack([flat // (n_pos * width), (flat // width) % n_pos, flat % width], dim=1)
    n_features = int(features.shape[0])

    n_errors = n_layers * n_pos
    token_offset = n_features + n_errors
    target_offset = token_offset + n_pos
    n_sources = target_offset  # features, errors and tokens can all be sources
    source_layer = torch.cat(
        [features[:, 0], torch.arange(n_layers).repeat_interleave(n_pos), torch.full((n_pos,), -1)]
    )
    source_pos = torch.cat([features[:, 1], torch.arange(n_pos).repeat(n_layers), torch.arange(n_pos)])

    # Rows that receive edges: features, then targets (which read the last position, above all layers).
    row_nodes = torch.cat([torch.arange(n_features), target_offset + torch.arange(n_targets)])
    row_layer = torch.cat([features[:, 0], torch.full((n_targets,), n_layers)])
    row_pos = torch.cat([features[:, 1], torch.full((n_targets,), n_pos - 1)])

    edge_targets = [torch.zeros(0, dtype=torch.long)]
    edge_sources = [torch.zeros(0, dtype=torch.long)]
    for start in range(0, int(row_nodes.shape[0]), _ROWS_PER_BLOCK):
        block = slice(start, start + _ROWS_PER_BLOCK)
        allowed = (source_layer[None, :] < row_layer[block, None]) & (
            source_pos[None, :] <= row_pos[block, None]
        )
        sampled = allowed & (torch.rand(allowed.shape, generator=generator) < edge_density)
        own_token = token_offset + row_pos[block]
        sampled[torch.arange(sampled.shape[0]), own_token] = True
        rows, columns = torch.nonzero(sampled, as_tuple=True)
        edge_targets.append(row_nodes[block][rows])
        edge_sources.append(columns)
    targets = torch.cat(edge_targets)
    sources = torch.cat(edge_sources)

    has_outgoing = torch.zeros(n_sources, dtype=torch.bool)
    has_outgoing[sources] = True
    lonely = torch.nonzero(~has_outgoing[:n_features]).flatten()
    if n_targets and lonely.numel():
        chosen = target_offset + torch.randint(n_targets, (lonely.numel(),), generator=generator)
        targets = torch.cat([targets, chosen])
        sources = torch.cat([sources, lonely])

    weights = torch.randn(targets.shape[0], generator=generator, dtype=torch.float64).to(dtype)
    tokens = torch.randint(vocab_size, (n_pos,), generator=generator)
    target_ids = torch.randint(vocab_size, (n_targets,), generator=generator)
    if n_custom_targets:
        target_ids[n_targets - n_custom_targets :] = -1
    probabilities = torch.softmax(torch.randn(n_targets, generator=generator, dtype=torch.float64), 0)
    probabilities = (0.9 * probabilities.sort(descending=True).values).to(dtype)
    labels = [f"tok{int(i)}" if int(i) >= 0 else f"custom{k}" for k, i in enumerate(target_ids)]
    return Graph(
        prompt=" ".join(f"t{int(t)}" for t in tokens),
        tokens=tokens,
        token_strings=[f" t{int(t)}" for t in tokens],
        n_layers=n_layers,
        features=features,
        activations=(torch.rand(n_features, generator=generator, dtype=torch.float64) * 5).to(dtype),
        target_labels=labels,
        target_token_ids=target_ids,
        target_probabilities=probabilities,
        target_vectors=torch.randn(n_targets, d_model, generator=generator, dtype=torch.float64).to(dtype),
        edge_targets=targets,
        edge_sources=sources,
        edge_weights=weights,
        metadata={
            "model_id": "random-model",
            "scan": "random-transcoders",
            "vocab_size": vocab_size,
            "seed": seed,
        },
    )


def hand_built_graph(f1_to_target: float = -1.0) -> Graph:
    """A tiny graph whose influences are worked out by hand (tests quote the numbers).

    1 layer, 2 positions, features f0 (pos 0) and f1 (pos 1), one target with p = 0.5.

    Nodes: f0=0, f1=1, err(0,0)=2, err(0,1)=3, tok0=4, tok1=5, target=6.
    Edges: target←f0 3, target←f1 ``f1_to_target``, target←err(0,1) 4, f0←tok0 1, f1←tok0 1, f1←tok1 -3.
    """
    edges = [(6, 0, 3.0), (6, 1, f1_to_target), (6, 3, 4.0), (0, 4, 1.0), (1, 4, 1.0), (1, 5, -3.0)]
    return Graph(
        prompt="a b",
        tokens=torch.tensor([7, 8]),
        token_strings=["a", " b"],
        n_layers=1,
        features=torch.tensor([[0, 0, 11], [0, 1, 12]]),
        activations=torch.tensor([1.0, 2.0]),
        target_labels=["c"],
        target_token_ids=torch.tensor([9]),
        target_probabilities=torch.tensor([0.5]),
        target_vectors=torch.zeros(1, 4),
        edge_targets=torch.tensor([t for t, _, _ in edges]),
        edge_sources=torch.tensor([s for _, s, _ in edges]),
        edge_weights=torch.tensor([w for _, _, w in edges]),
        metadata={"vocab_size": 100},
    )


def dense_adjacency(graph: Graph) -> torch.Tensor:
    """Dense ``[N, N]`` float64 adjacency (tests only: reference implementations on small graphs)."""
    matrix = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=torch.float64)
    matrix.index_put_((graph.edge_targets, graph.edge_sources), graph.edge_weights.double(), accumulate=True)
    return matrix


def circuit_tracer_dag(dtype: torch.dtype = torch.float32) -> Graph:
    """The hand-built 12-node DAG of circuit-tracer's ``tests/test_graph.py::test_small_graph``.

    Same node numbers as there, which is also tracewire's order: 2 layers x 2 positions,
    features 0-4, errors 5-8 (err(l, p) = 5 + 2l + p), tokens 9-10, one target 11 with p = 1.
    Every edge weighs 10: 11 ← {1, 3, 6, 8}; 3 ← {0, 1, 6}; 1 ← {9, 10}; 0 ← 9. Features 2 and 4
    have no edges. Layers and positions are chosen so every edge goes up a layer (or from a token)
    and never to an earlier position. Upstream's node influences are
    ``[1/12, 1/3, 0, 1/4, 0, 0, 1/3, 0, 1/4, 1/4, 1/6, 0]``.
    """
    edges = [(11, 1), (11, 3), (11, 6), (11, 8), (3, 0), (3, 1), (3, 6), (1, 9), (1, 10), (0, 9)]
    return Graph(
        prompt="ab",
        tokens=torch.tensor([0, 1]),
        token_strings=["a", "b"],
        n_layers=2,
        # (layer, pos, feature id): f0 reads token 0, f1 both tokens, f3 f0/f1/err(0,1).
        features=torch.tensor([[0, 0, 1], [0, 1, 2], [1, 0, 3], [1, 1, 4], [1, 0, 5]]),
        activations=(torch.tensor([1, 2, 3, 4, 5]) * 2).to(dtype),
        target_labels=["a"],
        target_token_ids=torch.tensor([0]),
        target_probabilities=torch.tensor([1.0], dtype=dtype),
        target_vectors=torch.zeros(1, 8, dtype=dtype),
        edge_targets=torch.tensor([t for t, _ in edges]),
        edge_sources=torch.tensor([s for _, s in edges]),
        edge_weights=torch.full((len(edges),), 10.0, dtype=dtype),
        metadata={"vocab_size": 16},
    )
