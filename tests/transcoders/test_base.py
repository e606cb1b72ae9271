"""The TranscoderSet API against independent dense computations (PLT, skip-PLT, CLT, skip-CLT)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tests.factories.transcoders import ACTIVATIONS, VARIANTS, near_mlp_out, random_inputs, random_set
from tracewire.errors import TranscoderFormatError
from tracewire.transcoders import CrossLayerTranscoder, LayerWeights, PerLayerTranscoders, TranscoderConfig
from tracewire.transcoders.base import TranscoderSet

N_LAYERS, D_MODEL, D_TC = 3, 8, 16


def dense_acts(ts: TranscoderSet, layer: int, x: Tensor) -> Tensor:
    """Activations from the raw parameters, without TranscoderSet.encode."""
    pre = torch.einsum("...d,fd->...f", x, ts.W_enc[layer]) + ts.b_enc[layer]
    if ts.activation_name == "jumprelu":
        threshold = ts.threshold(layer)
        assert threshold is not None
        return pre * (pre > threshold)
    if ts.activation_name == "relu":
        return pre.clamp_min(0)
    k = ts.config.k
    assert k is not None
    kth = pre.sort(dim=-1, descending=True).values[..., k - 1 : k]
    return torch.where(pre >= kth, pre.clamp_min(0), torch.zeros_like(pre))


def dense_reconstruction(ts: TranscoderSet, inputs: list[Tensor], *, with_skip: bool = True) -> list[Tensor]:
    """Σ over source layers writing to l of einsum(acts, W_dec) + b_dec + x_l W_skipᵀ, from raw parameters."""
    assert ts.W_dec is not None
    out = []
    for target in range(ts.n_layers):
        total = ts.b_dec[target].expand_as(inputs[target]).clone()
        if with_skip and ts.W_skip is not None:
            total = total + torch.einsum("...d,ed->...e", inputs[target], ts.W_skip[target])
        sources = range(target + 1) if isinstance(ts, CrossLayerTranscoder) else [target]
        for source in sources:
            acts = dense_acts(ts, source, inputs[source])
            W_dec = ts.W_dec[source]
            rows = W_dec[:, target - source] if W_dec.ndim == 3 else W_dec
            total = total + torch.einsum("...f,fd->...d", acts, rows)
        out.append(total)
    return out


@pytest.fixture(params=[(v, a) for v in VARIANTS for a in ACTIVATIONS], ids=lambda p: f"{p[0]}-{p[1]}")
def tset(request: pytest.FixtureRequest) -> TranscoderSet:
    variant, activation = request.param
    return random_set(
        variant, n_layers=N_LAYERS, d_model=D_MODEL, d_tc=D_TC, activation=activation, dtype=torch.float64
    )


def test_reconstruct_matches_dense_einsum(tset: TranscoderSet) -> None:
    inputs = random_inputs(N_LAYERS, D_MODEL, (2, 5), dtype=torch.float64)
    got = tset.reconstruct(inputs)
    want = dense_reconstruction(tset, inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    if tset.has_skip:  # a reconstruction that forgot the skip must not pass
        without = dense_reconstruction(tset, inputs, with_skip=False)
        assert all((g - w).abs().max() > 1e-3 for g, w in zip(got, without))


def test_reconstruct_with_given_acts_and_error_identity(tset: TranscoderSet) -> None:
    inputs = random_inputs(N_LAYERS, D_MODEL, (7,), dtype=torch.float64, seed=1)
    acts = [tset.encode(i, x) for i, x in enumerate(inputs)]
    rec = tset.reconstruct(inputs, acts)
    assert all(torch.equal(a, b) for a, b in zip(rec, tset.reconstruct(inputs)))
    mlp_out = near_mlp_out(rec)
    for r, m in zip(rec, mlp_out):
        error = m - r
        assert torch.equal(r + error, m)


def test_bias_and_skip_are_part_of_reconstruction(tset: TranscoderSet) -> None:
    inputs = random_inputs(N_LAYERS, D_MODEL, (3,), dtype=torch.float64)
    zero_acts = [torch.zeros(3, D_TC, dtype=torch.float64) for _ in range(N_LAYERS)]
    rec = tset.reconstruct(inputs, zero_acts)
    for layer, (r, x) in enumerate(zip(rec, inputs)):
        assert tset.b_dec[layer].abs().max() > 0
        torch.testing.assert_close(r, tset.b_dec[layer] + tset.skip(layer, x))


def test_encode_sparse_agrees_with_encode(tset: TranscoderSet) -> None:
    x = random_inputs(1, D_MODEL, (6,), dtype=torch.float64, seed=2)[0]
    for layer in range(N_LAYERS):
        dense = tset.encode(layer, x)
        pos, feat, values = tset.encode_sparse(layer, x)
        assert pos.dtype == feat.dtype == torch.long
        assert len(values) == int((dense != 0).sum()) > 0
        assert (values != 0).all()
        rebuilt = torch.zeros_like(dense)
        rebuilt[pos, feat] = values
        assert torch.equal(rebuilt, dense)
        order = pos * D_TC + feat
        assert torch.equal(order, order.sort().values)


def test_vectors_and_output_layers(tset: TranscoderSet) -> None:
    feats = torch.tensor([3, 0, 3, 15])
    for layer in range(N_LAYERS):
        outs = tset.output_layers(layer)
        expected = range(layer, N_LAYERS) if tset.kind == "clt" else range(layer, layer + 1)
        assert outs == expected
        enc = tset.encoder_vectors(layer, feats)
        assert torch.equal(enc, tset.W_enc[layer][feats])
        dec = tset.decoder_vectors(layer, feats)
        assert dec.shape == (4, len(outs), D_MODEL)
        assert tset.W_dec is not None
        assert torch.equal(dec.reshape(4, -1), tset.W_dec[layer][feats].reshape(4, -1))


def test_skip_is_differentiable(tset: TranscoderSet) -> None:
    x = random_inputs(1, D_MODEL, (4,), dtype=torch.float64)[0].requires_grad_(True)
    out = tset.skip(0, x)
    assert out.requires_grad and out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None
    if tset.has_skip:
        assert tset.W_skip is not None
        torch.testing.assert_close(x.grad, tset.W_skip[0].sum(0).expand_as(x))
    else:
        assert not x.grad.any()
    assert torch.equal(tset.skip(0, x.detach()), out.detach())


def test_properties_and_to_dtype() -> None:
    ts = random_set("skip-clt", n_layers=4, d_model=6, d_tc=10, activation="topk", k=3)
    assert (ts.n_layers, ts.d_model, ts.d_transcoder, ts.has_skip, ts.activation_name) == (
        4,
        6,
        10,
        True,
        "topk",
    )
    assert ts.config.k == 3 and ts.config.input_site == "mlp_in" and ts.config.output_site == "mlp_out"
    assert not any(p.requires_grad for p in ts.parameters())
    ts64 = ts.to(torch.float64)
    assert ts64.dtype == torch.float64 and all(p.dtype == torch.float64 for p in ts64.parameters())
    x = random_inputs(4, 6, (2,), dtype=torch.float64)
    assert ts64.reconstruct(x)[3].dtype == torch.float64


def _weights(d_tc: int = 4, d_model: int = 3, **overrides: Tensor | None) -> LayerWeights:
    fields: dict[str, Tensor | None] = {
        "W_enc": torch.zeros(d_tc, d_model),
        "b_enc": torch.zeros(d_tc),
        "W_dec": torch.zeros(d_tc, d_model),
        "b_dec": torch.zeros(d_model),
        "threshold": torch.zeros(d_tc),
    }
    fields.update(overrides)
    return LayerWeights(**fields)  # type: ignore[arg-type]


def test_constructor_validates_hand_built_weights() -> None:
    config = TranscoderConfig(kind="plt", n_layers=1, d_model=3, d_transcoder=4)
    PerLayerTranscoders(config, [_weights()])
    with pytest.raises(
        TranscoderFormatError, match=r"layer 0, tensor 'W_dec': shape \(5, 3\), expected \(4, 3\)"
    ):
        PerLayerTranscoders(config, [_weights(W_dec=torch.zeros(5, 3))])
    with pytest.raises(TranscoderFormatError, match=r"'threshold': missing \(activation is jumprelu\)"):
        PerLayerTranscoders(config, [_weights(threshold=None)])
    with pytest.raises(TranscoderFormatError, match="not floating point"):
        PerLayerTranscoders(config, [_weights(b_dec=torch.zeros(3, dtype=torch.int32))])
    with pytest.raises(TranscoderFormatError, match="kind"):
        CrossLayerTranscoder(config, [_weights()])


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"kind": "sae"}, "unknown transcoder kind"),
        ({"activation": "gelu"}, "unknown activation 'gelu'"),
        ({"activation": "topk"}, "needs an integer k"),
        ({"activation": "relu", "k": 3}, "only meaningful"),
        ({"feature_input_hook": "attn.hook_z"}, "unknown input hook"),
        ({"d_model": 0}, "d_model must be a positive integer"),
    ],
)
def test_config_validation(fields: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"kind": "plt", "n_layers": 2, "d_model": 4, "d_transcoder": 8}
    with pytest.raises(TranscoderFormatError, match=match):
        TranscoderConfig(**{**base, **fields})  # type: ignore[arg-type]
