"""The one place where tracewire touches a Hugging Face model's modules.

Everything that instruments a model — the local replacement model (frozen attention, frozen
norms, MLPs replaced by ``skip + constant``), interventions (clean run and intervened pass),
training activations, dashboard captures, the spliced-model evaluation — goes through a
:class:`Wiring`: it asks the adapter row once which modules exist and which of them carry the
transcoder's input and output sites (``Adapter.site_module``, the one site → module map), then,
for the duration of a forward, replaces those modules' ``forward`` with thin shims that ask a
:class:`Session` what to return. A session only sees *roles* (embedding, norm ``"{layer}.{role}"``,
transcoder input of layer ``l``, output site of layer ``l``, final norm, attention call) and never
a module path, so a new architecture needs one adapter row and nothing else.

- ``Session`` (the base class) changes nothing: every method returns the model's own value.
  Subclasses override the roles they care about.
- ``StopForward`` raised by a session ends the forward early (nothing above the deepest needed
  site runs); :meth:`Wiring.run` swallows it.
- Attention is routed through a function registered with ``transformers.AttentionInterface``
  (``attention_routing``) only for sessions with ``routes_attention = True``.
- Patches are instance attributes, removed on exit: a model is never left modified.

:func:`capture_sites` is the read-only use: one (possibly truncated) forward that returns the
input- and output-site tensors of the layers asked for. :func:`observe_attention` taps the inside
of attention modules (their input and the head outputs the output projection reads) for the
attention explanations, which need them in the replays other sessions drive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from tracewire.errors import InvalidArgumentError, TranscoderFormatError
from tracewire.models.attention_routing import AttentionCall, routed_attention

if TYPE_CHECKING:
    from tracewire.models.adapters import Adapter
    from tracewire.models.loading import LoadedModel
    from tracewire.transcoders.base import TranscoderSet

#: Computes the model's own value at a site on demand (a session may never call it).
Live = Callable[[], Tensor]
#: A module's own forward on one tensor.
Original = Callable[[Tensor], Tensor]


class StopForward(Exception):
    """Raised by a session once a forward has produced everything it needs."""


class Session:
    """What one forward does at each place the wiring touches. The base class changes nothing."""

    #: Whether attention calls go to :meth:`attention` (else the model's own function runs).
    routes_attention: bool = False

    def embed(self, input_ids: Tensor, live: Live) -> Tensor:
        """The token embeddings ``[B, T, d]``."""
        return live()

    def norm(self, path: str, module: nn.Module, original: Original, x: Tensor) -> Tensor:
        """The norm at ``path`` (``"{layer}.{role}"`` or ``"final"``) applied to ``x``."""
        return original(x)

    def transcoder_input(self, layer: int, x: Tensor) -> None:
        """Sees the input site of ``layer`` (the value flows on unchanged)."""

    def inner_mlp(self, layer: int, live: Live) -> Tensor:
        """The MLP output where it is *not* the output site (a post-MLP norm follows that is)."""
        return live()

    def output_site(self, layer: int, live: Live) -> Tensor:
        """The output site of ``layer``: what the transcoder replaces."""
        return live()

    def final(self, live: Live) -> Tensor:
        """The final norm's output (``live`` already goes through :meth:`norm` at ``"final"``)."""
        return live()

    def attention(self, call: AttentionCall) -> tuple[Tensor, Any]:
        """One attention call (only with ``routes_attention``)."""
        return call.own()


@dataclass(frozen=True)
class _Slot:
    """One module the wiring patches and the role(s) it plays."""

    module: nn.Module
    kind: Literal["embed", "norm", "mlp", "final"]
    layer: int = -1
    path: str = ""
    reads_input: bool = False  # its input is the transcoder input site of ``layer``
    writes_output: bool = False  # its output is the transcoder output site of ``layer``


def check_transcoders_fit(loaded: LoadedModel, transcoders: TranscoderSet) -> None:
    """Refuse a transcoder set whose layer count or width differs from the model's."""
    if transcoders.n_layers != loaded.n_layers:
        raise TranscoderFormatError(
            f"transcoders have {transcoders.n_layers} layers but model {loaded.name!r} has {loaded.n_layers}"
        )
    if transcoders.d_model != loaded.d_model:
        raise TranscoderFormatError(
            f"transcoders expect d_model={transcoders.d_model} but model {loaded.name!r} has "
            f"d_model={loaded.d_model}"
        )


class Wiring:
    """The modules of one model a session reaches, with the transcoder's two sites marked."""

    def __init__(self, loaded: LoadedModel, input_site: str, output_site: str) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.input_site = input_site
        self.output_site = output_site
        self.slots = self._plan()

    @classmethod
    def for_transcoders(cls, loaded: LoadedModel, transcoders: TranscoderSet) -> Wiring:
        """The wiring at ``transcoders``' sites (after checking they fit the model)."""
        from tracewire.transcoders import sites

        check_transcoders_fit(loaded, transcoders)
        cfg = transcoders.config
        return cls(
            loaded, sites.input_site(cfg.feature_input_hook), sites.output_site(cfg.feature_output_hook)
        )

    def _plan(self) -> list[_Slot]:
        model, adapter = self.model, self.loaded.adapter
        slots = [_Slot(adapter.embed_module(model), "embed")]
        for layer in range(self.loaded.n_layers):
            reader, reader_side = adapter.site_module(model, layer, self.input_site)
            writer, writer_side = adapter.site_module(model, layer, self.output_site)
            if reader_side != "input" or writer_side != "output":
                raise InvalidArgumentError(
                    f"sites {self.input_site!r} / {self.output_site!r}: expected an input site "
                    "(resid_mid, mlp_in) and an output site (mlp_out, mlp_block_out)"
                )
            roles: list[tuple[str, nn.Module]] = list(adapter.norm_modules(model, layer).items())
            roles.append(("mlp", adapter.mlp_module(model, layer)))
            for role, module in roles:
                slots.append(
                    _Slot(
                        module,
                        "mlp" if role == "mlp" else "norm",
                        layer,
                        f"{layer}.{role}",
                        reads_input=module is reader,
                        writes_output=module is writer,
                    )
                )
        slots.append(_Slot(adapter.final_norm_module(model), "final", path="final"))
        return slots

    @contextmanager
    def active(self, session: Session) -> Iterator[None]:
        """Patch the model to consult ``session`` until the context exits."""
        patched = [(slot.module, _shim(session, slot)) for slot in self.slots]
        with routed_attention(self.model, session) if session.routes_attention else _nothing():
            try:
                for module, forward in patched:
                    module.forward = forward  # type: ignore[method-assign]
                yield
            finally:
                for module, _ in patched:
                    module.__dict__.pop("forward", None)

    def run(self, session: Session, ids: Tensor) -> Any | None:
        """One forward of ``ids`` under ``session``; ``None`` if the session stopped it early."""
        with self.active(session):
            try:
                return self.model(input_ids=ids.to(self.loaded.device), use_cache=False)
            except StopForward:
                return None


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _shim(session: Session, slot: _Slot) -> Callable[..., Any]:
    """The ``forward`` that replaces ``slot.module``'s while a session is active."""
    module, layer = slot.module, slot.layer
    own = type(module).forward

    def original(x: Tensor) -> Tensor:
        return own(module, x)  # type: ignore[no-any-return]

    if slot.kind == "embed":

        def embed(input_ids: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            return session.embed(input_ids, lambda: own(module, input_ids, *args, **kwargs))

        return embed
    if slot.kind == "final":

        def final(x: Tensor) -> Tensor:
            return session.final(lambda: session.norm("final", module, original, x))

        return final
    if slot.kind == "norm":

        def norm(x: Tensor) -> Tensor:
            if slot.reads_input:
                session.transcoder_input(layer, x)
            if slot.writes_output:
                return session.output_site(layer, lambda: session.norm(slot.path, module, original, x))
            return session.norm(slot.path, module, original, x)

        return norm

    def mlp(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if slot.reads_input:
            session.transcoder_input(layer, x)

        def live() -> Tensor:
            return own(module, x, *args, **kwargs)  # type: ignore[no-any-return]

        return session.output_site(layer, live) if slot.writes_output else session.inner_mlp(layer, live)

    return mlp


# -- read-only captures ----------------------------------------------------------------------------


@dataclass
class SiteValues:
    """Detached site tensors ``{layer: [B, T, d]}`` of one forward."""

    inputs: dict[int, Tensor] = field(default_factory=dict)
    outputs: dict[int, Tensor] = field(default_factory=dict)


class _Capture(Session):
    """Keeps the wanted layers' site tensors; stops the forward after the last one it needs."""

    def __init__(self, layers: Sequence[int], outputs: bool, stop_early: bool) -> None:
        self.layers = frozenset(layers)
        self.keep_outputs = outputs
        self.last = max(layers) if stop_early else None
        self.values = SiteValues()

    def transcoder_input(self, layer: int, x: Tensor) -> None:
        if layer in self.layers:
            self.values.inputs[layer] = x.detach()
            if layer == self.last and not self.keep_outputs:
                raise StopForward

    def output_site(self, layer: int, live: Live) -> Tensor:
        value = live()
        if self.keep_outputs and layer in self.layers:
            self.values.outputs[layer] = value.detach()
            if layer == self.last:
                raise StopForward
        return value


def capture_sites(
    loaded: LoadedModel,
    ids: Tensor,
    input_site: str,
    output_site: str | None = None,
    *,
    layers: Sequence[int] | None = None,
    stop_early: bool = True,
) -> SiteValues:
    """Input-site (and, if ``output_site`` is given, output-site) tensors of ``layers`` (default:
    all) for token ids ``ids [B, T]``, from one forward that stops after the deepest one needed.

    Nothing is changed: the values are those of a plain forward. Raises if a site is never reached.
    """
    wanted = sorted(set(range(loaded.n_layers) if layers is None else layers))
    if not wanted:
        return SiteValues()
    session = _Capture(wanted, outputs=output_site is not None, stop_early=stop_early)
    wiring = Wiring(loaded, input_site, output_site or "mlp_out")
    with torch.no_grad():
        wiring.run(session, ids)
    values = session.values
    missing = [
        layer
        for layer in wanted
        if layer not in values.inputs or (output_site is not None and layer not in values.outputs)
    ]
    if missing:
        sites = input_site if output_site is None else f"{input_site}/{output_site}"
        raise RuntimeError(f"sites {sites} of layers {missing} were not reached by the model's forward")
    return values


#: Called with (layer, attention input [B, P, d], rotary (cos, sin) or None, mask or None).
AttentionInputTap = Callable[[int, Tensor, "tuple[Tensor, Tensor] | None", "Tensor | None"], None]
#: Called with (layer, head outputs z [B, P, H·dh]); returns the z the output projection reads.
HeadOutputTap = Callable[[int, Tensor], Tensor]


@contextmanager
def observe_attention(
    model: nn.Module,
    adapter: Adapter,
    layers: Sequence[int],
    on_input: AttentionInputTap,
    on_head_outputs: HeadOutputTap,
) -> Iterator[None]:
    """Tap the attention modules of ``layers`` in every forward run inside the context.

    ``on_input`` sees what the attention module is called with; ``on_head_outputs`` sees the
    concatenated per-head ``P·V`` (head-major) on its way into the output projection and may
    return a replacement (e.g. a detached leaf of the same value). Forward pre-hooks, not patched
    forwards, so they compose with whatever session a :class:`Wiring` has active.
    """
    handles = []
    for layer in layers:
        attn = adapter.attn_module(model, layer)
        out_proj = getattr(attn, adapter.attn_out_proj)
        assert isinstance(out_proj, nn.Module), (
            f"{type(attn).__name__}.{adapter.attn_out_proj} is not a module"
        )

        def attention_pre_hook(
            _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], layer: int = layer
        ) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            on_input(layer, hidden, kwargs.get("position_embeddings"), kwargs.get("attention_mask"))

        def out_proj_pre_hook(
            _module: nn.Module, args: tuple[Any, ...], layer: int = layer
        ) -> tuple[Any, ...]:
            return (on_head_outputs(layer, args[0]), *args[1:])

        handles.append(attn.register_forward_pre_hook(attention_pre_hook, with_kwargs=True))
        handles.append(out_proj.register_forward_pre_hook(out_proj_pre_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
