"""Independent ground truth for attribution edges.

``perturbation_adjacency`` measures every edge the way circuit-tracer's tests do: in the frozen
model (attention patterns, norm scales and every MLP output except its transcoder skip path held
at their clean values) add one source's vector at its site — an error vector, a token vector, or
a feature's decoder output (doubling its activation) — and read the change of every target: each
feature's pre-activation ``W_enc · x`` and each demeaned logit. All sources are perturbed at once
as one batched replay, one source per batch element. Nothing of the engine's injection, batching,
cone or contraction code is used; only the frozen forward.

``jacobian_adjacency`` gets the same numbers from ``torch.autograd.functional.jacobian`` of the
frozen forward with respect to additive perturbations at each site.
"""

from __future__ import annotations

import torch

from tracewire.graph.graph import Graph
from tracewire.replacement.model import ReplacementModel


def _sources(rm: ReplacementModel, graph: Graph):
    """Per graph source node: (kind, layer, pos, vector-per-output-layer)."""
    ts = rm.transcoders
    ids = graph.tokens
    record = rm.record(ids)
    inputs = [record.transcoder_inputs[layer][0].detach() for layer in range(rm.n_layers)]
    recon = ts.reconstruct(inputs)
    errors = [record.output_values[layer][0] - recon[layer] for layer in range(rm.n_layers)]
    for p in graph.metadata["zero_positions"]:
        for e in errors:
            e[p] = 0
    emb = record.embeddings[0].detach()
    sources = []
    for i, (layer, _pos, feat) in enumerate(graph.features.tolist()):
        dec = ts.decoder_vectors(layer, torch.tensor([feat]))[0]  # [n_out, d]
        act = graph.activations[i]
        writes = {out: act * dec[j] for j, out in enumerate(ts.output_layers(layer))}
        sources.append(("feature", writes, None))
    for layer in range(rm.n_layers):
        sources.extend(("error", {layer: _at(errors[layer], pos)}, None) for pos in range(graph.n_pos))
    for pos in range(graph.n_pos):
        sources.append(("token", {}, _at(emb, pos)))
    return record, sources


def _at(matrix: torch.Tensor, pos: int) -> torch.Tensor:
    out = torch.zeros_like(matrix)
    out[pos] = matrix[pos]
    return out


def _feature_positions(graph: Graph, sources, index: int) -> tuple[int, int]:
    layer, pos, _ = graph.features[index].tolist()
    return layer, pos


def _read_targets(rm: ReplacementModel, graph: Graph, run) -> torch.Tensor:
    """[B, n_feature_nodes + n_targets] read-outs of every target node."""
    ts = rm.transcoders
    cols = []
    for layer, pos, feat in graph.features.tolist():
        x = run.transcoder_inputs[layer][:, pos]
        cols.append(x.float() @ ts.encoder_vectors(layer, torch.tensor([feat]))[0].float())
    final = run.final_resid[:, -1].float()
    for k in range(graph.n_targets):
        cols.append(final @ graph.target_vectors[k].float())
    return torch.stack(cols, dim=1)


def perturbed_inputs(rm: ReplacementModel, graph: Graph):
    """``(state, embeddings)`` of one batched replay: element 0 clean, element ``b`` plus source ``b - 1``."""
    record, sources = _sources(rm, graph)
    state = record.state
    n = len(sources)
    constants = {layer: c.expand(n + 1, -1, -1).clone() for layer, c in state.mlp_constants.items()}
    emb = record.embeddings.detach().expand(n + 1, -1, -1).clone()
    for b, (kind, writes, token_vec) in enumerate(sources, start=1):
        for layer, vec in writes.items():
            if kind == "feature":
                _, pos = _feature_positions(graph, sources, b - 1)
                constants[layer][b, pos] += vec
            else:
                constants[layer][b] += vec
        if token_vec is not None:
            emb[b] += token_vec
    return _with_constants(state, constants), emb


def perturbation_adjacency(rm: ReplacementModel, graph: Graph) -> torch.Tensor:
    """Dense ``[N, N]`` (targets × sources) direct effects measured by perturbation."""
    perturbed, emb = perturbed_inputs(rm, graph)
    with torch.no_grad():
        run = rm.replay(perturbed, embeddings=emb)
        reads = _read_targets(rm, graph, run)
    delta = reads[1:] - reads[0:1]  # [n_sources, n_targets]
    return _dense(graph, delta)


def jacobian_adjacency(rm: ReplacementModel, graph: Graph) -> torch.Tensor:
    """Dense ``[N, N]`` from ``torch.autograd.functional.jacobian`` of the frozen forward."""
    record, sources = _sources(rm, graph)
    state = record.state
    emb0 = record.embeddings.detach()
    layers = sorted(state.mlp_constants)

    def forward(d_emb: torch.Tensor, *d_out: torch.Tensor) -> torch.Tensor:
        constants = {layer: state.mlp_constants[layer] + d[None] for layer, d in zip(layers, d_out)}
        run = rm.replay(_with_constants(state, constants), embeddings=emb0 + d_emb[None])
        return _read_targets(rm, graph, run)[0]

    zeros = (
        torch.zeros_like(emb0[0]),
        *(torch.zeros_like(state.mlp_constants[layer][0]) for layer in layers),
    )
    jac = torch.autograd.functional.jacobian(forward, zeros)  # tuple per input: [n_targets, P, d]
    rows = []
    for b, (kind, writes, token_vec) in enumerate(sources):
        effect = torch.zeros(jac[0].shape[0])
        if token_vec is not None:
            effect += (jac[0] * token_vec).sum((1, 2))
        for layer, vec in writes.items():
            j = jac[1 + layers.index(layer)]
            if kind == "feature":
                _, pos = _feature_positions(graph, sources, b)
                effect += j[:, pos] @ vec.float()
            else:
                effect += (j * vec).sum((1, 2))
        rows.append(effect)
    return _dense(graph, torch.stack(rows))


def _with_constants(state, constants):
    from dataclasses import replace

    return replace(state, mlp_constants=constants)


def _dense(graph: Graph, delta: torch.Tensor) -> torch.Tensor:
    """Place ``delta [n_sources, n_feature_nodes + n_targets]`` into an ``[N, N]`` matrix."""
    n = graph.n_nodes
    matrix = torch.zeros(n, n)
    target_rows = list(range(graph.n_features)) + [
        graph.n_nodes - graph.n_targets + k for k in range(graph.n_targets)
    ]
    matrix[torch.tensor(target_rows)[:, None], torch.arange(delta.shape[0])[None, :]] = delta.T.float()
    return matrix


def graph_dense(graph: Graph) -> torch.Tensor:
    matrix = torch.zeros(graph.n_nodes, graph.n_nodes)
    matrix[graph.edge_targets, graph.edge_sources] = graph.edge_weights.float()
    return matrix
