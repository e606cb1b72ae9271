"""Independent ground truth for attention explanations.

``head_part_adjacency``: every edge's head parts measured by frozen-model interventions, with
none of the library's gradient seeding: all sources are perturbed at once (one per batch element,
element 0 unperturbed, as in ``tests/attribution/oracle.py``), and head outputs are *held at their
clean values* by a pre-hook on the output projection that copies element 0's slice into every
element. ``M_l`` holds every layer above ``l``; the part of head ``(l, h)`` is the edge in ``M_l``
minus the edge in ``M_l`` with head ``(l, h)`` also held; the direct part is the edge with every
layer held.

``qk_jacobians``: each source's part of every query and key of a layer, from
``torch.autograd.functional.jacobian`` of the replayed projection with respect to additive
perturbations of the embeddings and MLP outputs, times the source's vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from tests.attribution.oracle import (
    _dense,
    _feature_positions,
    _read_targets,
    _sources,
    _with_constants,
    perturbed_inputs,
)
from tracewire.attention.access import QKProjector, attention_module, capture_attention, head_geometry
from tracewire.graph.graph import Graph
from tracewire.replacement.model import ReplacementModel


@contextmanager
def _hold(rm: ReplacementModel, held: dict[int, list[int]]) -> Iterator[None]:
    """Hold the listed heads of each layer at batch element 0's (clean) output."""
    dh = head_geometry(rm).head_dim
    handles = []
    for layer, heads in held.items():
        proj = getattr(attention_module(rm, layer), rm.adapter.attn_out_proj)

        def hook(_module, args, heads=heads):
            z = args[0].clone()
            for h in heads:
                z[1:, :, h * dh : (h + 1) * dh] = z[0:1, :, h * dh : (h + 1) * dh]
            return (z, *args[1:])

        handles.append(proj.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_part_adjacency(
    rm: ReplacementModel, graph: Graph
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense ``(edges, direct [N, N], heads [L, H, N, N])`` measured by holding head outputs."""
    state, emb = perturbed_inputs(rm, graph)
    n_layers, n_heads = rm.n_layers, head_geometry(rm).n_heads
    all_heads = list(range(n_heads))

    def edges(held: dict[int, list[int]]) -> torch.Tensor:
        with torch.no_grad(), _hold(rm, held):
            run = rm.replay(state, embeddings=emb)
            reads = _read_targets(rm, graph, run)
        return _dense(graph, reads[1:] - reads[0:1])

    full = edges({})
    direct = edges({layer: all_heads for layer in range(n_layers)})
    heads = torch.zeros(n_layers, n_heads, graph.n_nodes, graph.n_nodes)
    for layer in range(n_layers):
        above = {upper: all_heads for upper in range(layer + 1, n_layers)}
        in_model = edges(above)
        for h in range(n_heads):
            heads[layer, h] = in_model - edges({**above, layer: [h]})
    return full, direct, heads


def qk_jacobians(rm: ReplacementModel, graph: Graph, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each oracle source's part of layer ``layer``'s queries ``[S, H, P, dh]`` and keys ``[S, Hkv, P, dh]``.

    Oracle sources are in graph order: feature nodes, errors, tokens (``tests.attribution.oracle``).
    """
    record, sources = _sources(rm, graph)
    state = record.state
    emb0 = record.embeddings.detach()
    layers = sorted(state.mlp_constants)
    with torch.no_grad(), capture_attention(rm, [layer]) as cap:
        rm.replay(state, stop_after_layer=layer)
        projector = QKProjector.freeze(rm, layer, cap.hidden[layer])

    def forward(d_emb: torch.Tensor, *d_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        constants = {lay: state.mlp_constants[lay] + d[None] for lay, d in zip(layers, d_out)}
        with capture_attention(rm, [layer]) as cap:
            rm.replay(
                _with_constants(state, constants), embeddings=emb0 + d_emb[None], stop_after_layer=layer
            )
            q, k = projector.project(cap.hidden[layer], cap.rotary[layer])
        return q[0], k[0]

    zeros = (torch.zeros_like(emb0[0]), *(torch.zeros_like(state.mlp_constants[lay][0]) for lay in layers))
    jq, jk = torch.autograd.functional.jacobian(forward, zeros, vectorize=False)
    q_parts, k_parts = [], []
    for b, (kind, writes, token_vec) in enumerate(sources):
        parts = []
        for jac in (jq, jk):
            effect = torch.zeros(jac[0].shape[:3])
            if token_vec is not None:
                effect += (jac[0] * token_vec).sum((-2, -1))
            for lay, vec in writes.items():
                j = jac[1 + layers.index(lay)]
                if kind == "feature":
                    _, pos = _feature_positions(graph, sources, b)
                    effect += j[..., pos, :] @ vec.float()
                else:
                    effect += (j * vec).sum((-2, -1))
            parts.append(effect)
        q_parts.append(parts[0])
        k_parts.append(parts[1])
    return torch.stack(q_parts), torch.stack(k_parts)


def source_free_qk(rm: ReplacementModel, graph: Graph, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of ``layer`` with every source removed: the constant terms, measured."""
    record, sources = _sources(rm, graph)
    state = record.state
    constants = {lay: c.clone() for lay, c in state.mlp_constants.items()}
    for b, (kind, writes, _token) in enumerate(sources):
        for lay, vec in writes.items():
            if kind == "feature":
                _, pos = _feature_positions(graph, sources, b)
                constants[lay][0, pos] -= vec
            else:
                constants[lay][0] -= vec
    with torch.no_grad(), capture_attention(rm, [layer]) as cap:
        rm.replay(state, stop_after_layer=layer)
        projector = QKProjector.freeze(rm, layer, cap.hidden[layer])
    with torch.no_grad(), capture_attention(rm, [layer]) as cap:
        emb = torch.zeros_like(record.embeddings.detach())
        rm.replay(_with_constants(state, constants), embeddings=emb, stop_after_layer=layer)
        q, k = projector.project(cap.hidden[layer], cap.rotary[layer])
    return q[0], k[0]
