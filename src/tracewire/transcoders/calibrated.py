"""Random transcoders calibrated on a real model: a stand-in until trained ones exist.

Benchmarks need transcoders of realistic *shape* for a real model — thousands of features per
layer, ~100 active per token — so that attribution cost and memory are representative. Encoder
rows are random unit vectors; each feature's threshold (JumpReLU) or negative bias (ReLU) is the
``1 − target/d_tc`` quantile of its pre-activation on calibration text, so about
``target_active`` features fire per token and layer; decoders are random directions scaled so the
reconstruction's norm matches the MLP output's. Deterministic for a given seed and model.
"""

from __future__ import annotations

import torch

from tracewire.errors import InvalidArgumentError
from tracewire.models.hooks import capture_sites
from tracewire.models.loading import LoadedModel
from tracewire.transcoders.base import LayerWeights, TranscoderConfig
from tracewire.transcoders.per_layer import PerLayerTranscoders

CALIBRATION_TEXT = (
    "The history of the city goes back more than two thousand years, to a small settlement on the river. "
    "In 1990, the company reported record profits and announced plans to expand into new markets. "
    "def main():\n    for i in range(10):\n        print(i * i)\n"
    "Once upon a time there lived a king who had three daughters, each more clever than the last. "
    "The president said on Tuesday that the negotiations would continue until an agreement was reached. "
    "Water is made of hydrogen and oxygen; it boils at one hundred degrees Celsius at sea level. "
    "Q: What is the capital of France? A: The capital of France is Paris. "
    "import numpy as np\nx = np.linspace(0, 1, 100)\n"
    "She walked along the beach at sunset, listening to the waves and thinking about the letter. "
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules. "
    "The team won the championship after a dramatic final game that went into overtime. "
    "Michael Jordan played basketball for the Chicago Bulls and won six championships. "
)


@torch.no_grad()
def calibrated_random_plt(
    loaded: LoadedModel,
    *,
    n_features: int = 4096,
    target_active: float = 100.0,
    activation: str = "relu",
    seed: int = 0,
    text: str = CALIBRATION_TEXT,
) -> PerLayerTranscoders:
    """Per-layer transcoders for ``loaded`` reading ``mlp.hook_in`` and writing ``mlp.hook_out``."""
    if activation not in ("relu", "jumprelu"):
        raise InvalidArgumentError(f"activation must be 'relu' or 'jumprelu', got {activation!r}")
    generator = torch.Generator().manual_seed(seed)
    sites = capture_sites(loaded, loaded.encode(text)[None], "mlp_in", "mlp_out")
    # position 0 (the BOS, an attention sink) is skipped
    inputs = {layer: x[0, 1:].float().cpu() for layer, x in sites.inputs.items()}
    outputs = {layer: y[0, 1:].float().cpu() for layer, y in sites.outputs.items()}
    d_model = loaded.d_model
    quantile = 1.0 - target_active / n_features
    layers = []
    for layer in range(loaded.n_layers):
        x, y = inputs[layer], outputs[layer]
        w_enc = torch.randn(n_features, d_model, generator=generator)
        w_enc /= w_enc.norm(dim=1, keepdim=True)
        pre = x @ w_enc.T
        threshold = torch.quantile(pre, quantile, dim=0)
        w_dec = torch.randn(n_features, d_model, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if activation == "relu":
            b_enc = -threshold
            acts = torch.relu(pre + b_enc)
            thr = None
        else:
            b_enc = torch.zeros(n_features)
            acts = pre * (pre > threshold)
            thr = threshold.contiguous()
        scale = y.norm(dim=1).mean() / (acts @ w_dec).norm(dim=1).mean().clamp_min(1e-6)
        layers.append(
            LayerWeights(
                W_enc=w_enc.contiguous(),
                b_enc=b_enc.contiguous(),
                W_dec=(w_dec * scale).contiguous(),
                b_dec=torch.zeros(d_model),
                threshold=thr,
            )
        )
    config = TranscoderConfig(
        kind="plt",
        model_name=loaded.name,
        feature_input_hook="mlp.hook_in",
        feature_output_hook="mlp.hook_out",
        activation=activation,
        scan=f"calibrated-random-{activation}-{n_features}-{int(target_active)}-seed{seed}",
        n_layers=loaded.n_layers,
        d_model=d_model,
        d_transcoder=n_features,
    )
    ts = PerLayerTranscoders(config, layers)
    return ts.to(device=loaded.device, dtype=loaded.dtype)
