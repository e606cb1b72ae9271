"""What every transcoder set offers: the config record and the ``TranscoderSet`` module.

A *transcoder set* replaces every MLP of a model with a sparse, linear-in-its-features
approximation. Per-layer transcoders (PLT) and cross-layer transcoders (CLT) differ only in which
output layers a feature's decoder writes to (``output_layers``), so all of the encoding, decoding,
skip and reconstruction logic lives here once; subclasses declare the decoder layout and their
file format's name.

Weights are stored per source layer in ``nn.ParameterList``s (``W_enc``, ``b_enc``, ``W_dec``,
``b_dec``, ``W_skip``) in the circuit-tracer layout, so state dicts and files map one to one.
Parameters are created with ``requires_grad=False``: attribution backpropagates *through*
transcoders and should not accumulate weight gradients; a trainer calls ``requires_grad_(True)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from tracewire.errors import InvalidArgumentError, TranscoderFormatError
from tracewire.transcoders.activations import ACTIVATION_NAMES, Activation, make_activation
from tracewire.transcoders.lazy_rows import LazyRows
from tracewire.transcoders.sites import input_site, output_site
from tracewire.transcoders.validation import check_floating, check_shape

KINDS: tuple[str, ...] = ("plt", "clt")


@dataclass(frozen=True, kw_only=True)
class TranscoderConfig:
    """Everything about a transcoder set except its weights.

    ``feature_input_hook`` / ``feature_output_hook`` keep the TransformerLens hook names of the
    config file (so a round trip writes them back verbatim); ``input_site`` / ``output_site`` give
    tracewire's site names. ``scan`` identifies the set (e.g. for feature-example lookup).
    """

    kind: str
    model_name: str | None = None
    feature_input_hook: str = "mlp.hook_in"
    feature_output_hook: str = "mlp.hook_out"
    activation: str = "jumprelu"
    k: int | None = None
    scan: str | None = None
    n_layers: int
    d_model: int
    d_transcoder: int
    has_skip: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TranscoderFormatError(
                f"unknown transcoder kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )
        if self.activation not in ACTIVATION_NAMES:
            raise TranscoderFormatError(
                f"unknown activation {self.activation!r}; expected one of {', '.join(ACTIVATION_NAMES)}"
            )
        for name in ("n_layers", "d_model", "d_transcoder"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise TranscoderFormatError(f"{name} must be a positive integer, got {value!r}")
        if self.activation == "topk":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or not 0 < self.k <= self.d_transcoder:
                raise TranscoderFormatError(
                    f"activation 'topk' needs an integer k in [1, d_transcoder={self.d_transcoder}], "
                    f"got k={self.k!r}"
                )
        elif self.k is not None:
            raise TranscoderFormatError(
                f"k={self.k!r} is only meaningful for activation 'topk', not {self.activation!r}"
            )
        input_site(self.feature_input_hook)
        output_site(self.feature_output_hook)

    @property
    def input_site(self) -> str:
        """tracewire site the transcoders read (``resid_mid`` | ``mlp_in``)."""
        return input_site(self.feature_input_hook)

    @property
    def output_site(self) -> str:
        """tracewire site the transcoders reconstruct (``mlp_out`` | ``mlp_block_out``)."""
        return output_site(self.feature_output_hook)


@dataclass
class LayerWeights:
    """The tensors of one source layer, as handed to a ``TranscoderSet`` constructor.

    ``W_dec`` is ``[d_tc, d_model]`` for a PLT and ``[d_tc, n_layers - layer, d_model]`` for a
    CLT, or a ``LazyRows`` reader when the decoder stays on disk. ``origin`` maps a field name to
    the file and tensor it was read from, so that shape errors can name them.
    """

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor | LazyRows
    b_dec: Tensor
    threshold: Tensor | None = None
    W_skip: Tensor | None = None
    origin: dict[str, str] = field(default_factory=dict)


class TranscoderSet(nn.Module, ABC):
    """A transcoder for every layer of a model, with the API attribution and interventions use.

    ``layer`` arguments are *source* layers (where a feature reads its input); ``x`` is
    ``[..., d_model]`` in the set's device and dtype.
    """

    kind: ClassVar[str]

    def __init__(
        self, config: TranscoderConfig, layers: Sequence[LayerWeights], *, dims_note: str = ""
    ) -> None:
        """Build the set from per-layer weights; ``dims_note`` says where the config's sizes came from.

        Every tensor is checked against ``config``; errors name the tensor's ``origin``.
        """
        super().__init__()
        if config.kind != self.kind:
            raise TranscoderFormatError(
                f"{type(self).__name__} needs config.kind={self.kind!r}, got {config.kind!r}"
            )
        self._config = config
        self._check_layers(layers, dims_note or "sizes from the config")
        self.W_enc = nn.ParameterList([w.W_enc for w in layers])
        self.b_enc = nn.ParameterList([w.b_enc for w in layers])
        self.b_dec = nn.ParameterList([w.b_dec for w in layers])
        self.W_skip: nn.ParameterList | None = (
            nn.ParameterList([w.W_skip for w in layers if w.W_skip is not None]) if config.has_skip else None
        )
        self.activations = nn.ModuleList(
            [make_activation(config.activation, threshold=w.threshold, k=config.k) for w in layers]
        )
        lazy = [w.W_dec for w in layers if isinstance(w.W_dec, LazyRows)]
        eager = [w.W_dec for w in layers if isinstance(w.W_dec, Tensor)]
        if lazy and eager:
            raise TranscoderFormatError("either every layer's W_dec is lazy (LazyRows) or none is")
        self._lazy_decoders: list[LazyRows] | None = lazy or None
        self.W_dec: nn.ParameterList | None = nn.ParameterList(eager) if eager else None
        self.requires_grad_(False)  # see the module docstring

    # ----------------------------------------------------------------- layout (subclasses)

    @abstractmethod
    def output_layers(self, layer: int) -> range:
        """Output layers that features of source layer ``layer`` write to."""

    @abstractmethod
    def _decoder_dims(self, layer: int) -> tuple[tuple[int, ...], str]:
        """Expected shape of ``W_dec`` of ``layer`` in the file layout, and its axes' names."""

    # ----------------------------------------------------------------- properties

    @property
    def config(self) -> TranscoderConfig:
        return self._config

    @property
    def n_layers(self) -> int:
        return self._config.n_layers

    @property
    def d_model(self) -> int:
        return self._config.d_model

    @property
    def d_transcoder(self) -> int:
        """Features per source layer."""
        return self._config.d_transcoder

    @property
    def has_skip(self) -> bool:
        return self._config.has_skip

    @property
    def activation_name(self) -> str:
        return self._config.activation

    @property
    def lazy_decoder(self) -> bool:
        """True when decoder rows are read from disk on demand."""
        return self._lazy_decoders is not None

    @property
    def device(self) -> torch.device:
        return self.b_dec[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.b_dec[0].dtype

    # ----------------------------------------------------------------- encoding

    def pre_activations(self, layer: int, x: Tensor) -> Tensor:
        """``W_enc x + b_enc``: ``[..., d_model] -> [..., d_tc]``."""
        self._check_layer(layer)
        return torch.nn.functional.linear(x, self.W_enc[layer], self.b_enc[layer])

    def activation(self, layer: int) -> Activation:
        """The activation module of ``layer`` (holds JumpReLU thresholds)."""
        self._check_layer(layer)
        act = self.activations[layer]
        assert isinstance(act, Activation)
        return act

    def threshold(self, layer: int) -> Tensor | None:
        """JumpReLU thresholds ``[d_tc]`` of ``layer``, or None for ReLU / TopK."""
        threshold = getattr(self.activation(layer), "threshold", None)
        return threshold if isinstance(threshold, Tensor) else None

    def encode(self, layer: int, x: Tensor) -> Tensor:
        """Dense feature activations ``[..., d_tc]`` of source layer ``layer``."""
        return self.activation(layer)(self.pre_activations(layer, x))

    def encode_sparse(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Non-zero activations of x [n_pos, d_model]: (pos_idx, feat_idx, values) sorted by (pos, feat)."""
        if x.ndim != 2:
            raise InvalidArgumentError(
                f"encode_sparse expects x of shape [n_pos, d_model], got {tuple(x.shape)}"
            )
        acts = self.encode(layer, x)
        pos_idx, feat_idx = acts.nonzero(as_tuple=True)  # row-major order: sorted by (pos, feat)
        return pos_idx, feat_idx, acts[pos_idx, feat_idx]

    def encoder_vectors(self, layer: int, feat_idx: Tensor) -> Tensor:
        """Rows of ``W_enc`` (no bias): ``[n, d_model]``."""
        self._check_layer(layer)
        return self.W_enc[layer][feat_idx.to(self.device)]

    # ----------------------------------------------------------------- decoding

    def decoder_vectors(self, layer: int, feat_idx: Tensor) -> Tensor:
        """Decoder rows of features ``feat_idx`` of ``layer``: ``[n, len(output_layers(layer)), d_model]``."""
        self._check_layer(layer)
        n_out = len(self.output_layers(layer))
        if self._lazy_decoders is not None:
            rows = self._lazy_decoders[layer].read(feat_idx).to(device=self.device, dtype=self.dtype)
        else:
            assert self.W_dec is not None
            rows = self.W_dec[layer][feat_idx.to(self.device)]
        return rows.reshape(-1, n_out, self.d_model)

    def decode(self, layer: int, acts: Tensor) -> Tensor:
        """What activations ``acts [..., d_tc]`` of ``layer`` write: ``[..., n_out, d_model]`` (no bias)."""
        self._check_layer(layer)
        n_out = len(self.output_layers(layer))
        lead = acts.shape[:-1]
        flat = acts.reshape(-1, self.d_transcoder)
        if self.W_dec is not None:
            out = flat @ self.W_dec[layer].reshape(self.d_transcoder, n_out * self.d_model)
        else:
            # Only the rows of features active somewhere are read from disk.
            active = flat.detach().ne(0).any(dim=0).nonzero().squeeze(1)
            rows = self.decoder_vectors(layer, active).reshape(active.numel(), n_out * self.d_model)
            out = flat[:, active] @ rows
        return out.reshape(*lead, n_out, self.d_model)

    def full_decoder(self, layer: int) -> Tensor:
        """The whole ``W_dec`` of ``layer`` in the file layout (read from disk if lazy)."""
        self._check_layer(layer)
        if self._lazy_decoders is not None:
            return self._lazy_decoders[layer].read_all().to(device=self.device, dtype=self.dtype)
        assert self.W_dec is not None
        return self.W_dec[layer]

    def skip(self, layer: int, x: Tensor) -> Tensor:
        """Linear skip contribution ``x @ W_skip.T`` into output layer ``layer`` (zeros if no skip).

        Without a skip the result is ``x * 0`` when ``x`` needs gradients, so callers can build
        ``skip + (mlp_out - skip).detach()`` uniformly and still get a graph connected to ``x``.
        """
        self._check_layer(layer)
        if self.W_skip is not None:
            return torch.nn.functional.linear(x, self.W_skip[layer])
        return x.mul(0) if x.requires_grad else torch.zeros_like(x)

    def reconstruct(self, inputs: Sequence[Tensor], acts: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Reconstruction of every output layer from the transcoder inputs of every layer.

        ``out[l] = Σ_{i: l ∈ output_layers(i)} decode(i, acts[i])[l - i'] + b_dec[l] + skip(l, inputs[l])``,
        where ``acts[i] = encode(i, inputs[i])`` unless given. ``mlp_out - out[l]`` is the error node.
        """
        if len(inputs) != self.n_layers:
            raise InvalidArgumentError(
                f"reconstruct needs {self.n_layers} inputs (one per layer), got {len(inputs)}"
            )
        if acts is not None and len(acts) != self.n_layers:
            raise InvalidArgumentError(
                f"reconstruct needs {self.n_layers} activation tensors, got {len(acts)}"
            )
        out = [self.b_dec[layer] + self.skip(layer, x) for layer, x in enumerate(inputs)]
        for layer, x in enumerate(inputs):
            layer_acts = self.encode(layer, x) if acts is None else acts[layer]
            written = self.decode(layer, layer_acts)
            for j, target in enumerate(self.output_layers(layer)):
                out[target] = out[target] + written[..., j, :]
        return out

    # ----------------------------------------------------------------- helpers

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range for a {self.n_layers}-layer transcoder set")

    def _check_layers(self, layers: Sequence[LayerWeights], dims_note: str) -> None:
        cfg = self._config
        if len(layers) != cfg.n_layers:
            raise TranscoderFormatError(
                f"config says n_layers={cfg.n_layers} but {len(layers)} layers were given"
            )
        d_tc, d_model = cfg.d_transcoder, cfg.d_model
        why = f"d_transcoder={d_tc}, d_model={d_model} ({dims_note})"
        for i, w in enumerate(layers):

            def where(name: str, w: LayerWeights = w, i: int = i) -> str:
                return w.origin.get(name, f"layer {i}, tensor {name!r}")

            dec_shape, dec_dims = self._decoder_dims(i)
            expected: list[tuple[str, Tensor | LazyRows | None, tuple[int, ...], str, bool]] = [
                ("W_enc", w.W_enc, (d_tc, d_model), "[d_transcoder, d_model]", True),
                ("b_enc", w.b_enc, (d_tc,), "[d_transcoder]", True),
                ("W_dec", w.W_dec, (d_tc, *dec_shape), dec_dims, True),
                ("b_dec", w.b_dec, (d_model,), "[d_model]", True),
                ("threshold", w.threshold, (d_tc,), "[d_transcoder]", cfg.activation == "jumprelu"),
                ("W_skip", w.W_skip, (d_model, d_model), "[d_model, d_model]", cfg.has_skip),
            ]
            for name, tensor, shape, dims, required in expected:
                if tensor is None:
                    if required:
                        reason = "activation is jumprelu" if name == "threshold" else "the set has a skip"
                        raise TranscoderFormatError(f"{where(name)}: missing ({reason})")
                    continue
                if not required:
                    reason = f"activation is {cfg.activation}" if name == "threshold" else "has_skip is False"
                    raise TranscoderFormatError(f"{where(name)}: unexpected tensor ({reason})")
                check_floating(tensor, where=where(name))
                check_shape(tensor, shape, where=where(name), dims=dims, why=why)

    def extra_repr(self) -> str:
        c = self._config
        parts = [
            f"n_layers={c.n_layers}",
            f"d_model={c.d_model}",
            f"d_transcoder={c.d_transcoder}",
            f"activation={c.activation}" + (f"(k={c.k})" if c.k is not None else ""),
            f"skip={c.has_skip}",
        ]
        if self.lazy_decoder:
            parts.append("lazy_decoder=True")
        return ", ".join(parts)
