"""The model-access layer: a pass-through session changes nothing, captures equal what plain forward
hooks see, early stops skip the rest of the forward, and the model is always left as it was."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from tests.factories.models import ARCHS, tiny_model
from tracewire.models.attention_routing import AttentionCall, current_implementation
from tracewire.models.hooks import Live, Session, StopForward, Wiring, capture_sites
from tracewire.models.loading import LoadedModel

IDS = torch.tensor([[0, 2, 3, 4, 5, 6, 7], [0, 8, 9, 4, 2, 3, 6]])


def _reference_sites(loaded: LoadedModel, input_site: str, output_site: str) -> tuple[dict, dict, Tensor]:
    """Site tensors seen by plain forward hooks on ``Adapter.site_module`` (the independent oracle)."""
    inputs: dict[int, Tensor] = {}
    outputs: dict[int, Tensor] = {}
    handles = []
    for layer in range(loaded.n_layers):
        reader, _ = loaded.adapter.site_module(loaded.model, layer, input_site)
        writer, _ = loaded.adapter.site_module(loaded.model, layer, output_site)
        handles.append(
            reader.register_forward_pre_hook(lambda m, a, layer=layer: inputs.__setitem__(layer, a[0]))
        )
        handles.append(
            writer.register_forward_hook(lambda m, a, o, layer=layer: outputs.__setitem__(layer, o))
        )
    try:
        with torch.no_grad():
            logits = loaded.model(input_ids=IDS, use_cache=False).logits
    finally:
        for handle in handles:
            handle.remove()
    return inputs, outputs, logits


class _Everything(Session):
    """Routes attention too, and counts what it saw; returns the model's own values everywhere."""

    routes_attention = True

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def _count(self, role: str) -> None:
        self.seen[role] = self.seen.get(role, 0) + 1

    def embed(self, input_ids: Tensor, live: Live) -> Tensor:
        self._count("embed")
        return live()

    def transcoder_input(self, layer: int, x: Tensor) -> None:
        self._count("input")

    def output_site(self, layer: int, live: Live) -> Tensor:
        self._count("output")
        return live()

    def final(self, live: Live) -> Tensor:
        self._count("final")
        return live()

    def attention(self, call: AttentionCall) -> tuple[Tensor, Any]:
        self._count("attention")
        return call.own()


def _untouched(loaded: LoadedModel, impl: str) -> bool:
    patched = [name for name, module in loaded.model.named_modules() if "forward" in module.__dict__]
    return not patched and current_implementation(loaded.model) == impl


@pytest.mark.parametrize("arch", ARCHS)
def test_pass_through_session_is_bit_identical(arch: str) -> None:
    loaded = tiny_model(arch)
    impl = current_implementation(loaded.model)
    with torch.no_grad():
        plain = loaded.model(input_ids=IDS, use_cache=False).logits
        session = _Everything()
        out = Wiring(loaded, "mlp_in", "mlp_out").run(session, IDS)
    assert out is not None
    assert torch.equal(out.logits, plain)
    n = loaded.n_layers
    assert session.seen == {"embed": 1, "input": n, "output": n, "final": 1, "attention": n}
    assert _untouched(loaded, impl)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    ("input_site", "output_site"), [("mlp_in", "mlp_out"), ("resid_mid", "mlp_block_out")]
)
def test_capture_equals_plain_hooks(arch: str, input_site: str, output_site: str) -> None:
    loaded = tiny_model(arch)
    inputs, outputs, _ = _reference_sites(loaded, input_site, output_site)
    values = capture_sites(loaded, IDS, input_site, output_site)
    assert sorted(values.inputs) == sorted(values.outputs) == list(range(loaded.n_layers))
    for layer in range(loaded.n_layers):
        assert torch.equal(values.inputs[layer], inputs[layer])
        assert torch.equal(values.outputs[layer], outputs[layer])
    if arch.startswith("gemma") and output_site == "mlp_block_out":
        # the post-MLP norm is a different site from the MLP output: the capture must not confuse them
        assert not torch.equal(values.outputs[0], capture_sites(loaded, IDS, "mlp_in", "mlp_out").outputs[0])


def test_capture_stops_after_the_deepest_needed_site() -> None:
    loaded = tiny_model("llama", n_layers=4)
    calls: list[int] = []
    handles = [
        loaded.adapter.layer(loaded.model, layer).register_forward_hook(
            lambda m, a, o, layer=layer: calls.append(layer)
        )
        for layer in range(4)
    ]
    final = loaded.adapter.final_norm_module(loaded.model).register_forward_hook(lambda *a: calls.append(-1))
    try:
        values = capture_sites(loaded, IDS, "resid_mid", layers=[1, 0])
    finally:
        for handle in [*handles, final]:
            handle.remove()
    assert sorted(values.inputs) == [0, 1] and not values.outputs
    assert calls == [0]  # layer 1 stopped at its pre-MLP norm; layers 2, 3 and the final norm never ran
    assert _untouched(loaded, current_implementation(loaded.model))


def test_patches_are_removed_when_a_session_fails() -> None:
    loaded = tiny_model("gemma2")
    impl = current_implementation(loaded.model)

    class Failing(_Everything):
        def output_site(self, layer: int, live: Live) -> Tensor:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Wiring(loaded, "mlp_in", "mlp_out").run(Failing(), IDS)
    assert _untouched(loaded, impl)

    class Stopping(Session):
        def transcoder_input(self, layer: int, x: Tensor) -> None:
            raise StopForward

    assert Wiring(loaded, "mlp_in", "mlp_out").run(Stopping(), IDS) is None
    assert _untouched(loaded, impl)


def test_sites_in_the_wrong_role_are_refused() -> None:
    loaded = tiny_model("llama")
    with pytest.raises(ValueError, match="expected an input site"):
        Wiring(loaded, "mlp_out", "mlp_in")
    with pytest.raises(ValueError, match="unknown site"):
        Wiring(loaded, "attn_out", "mlp_out")
