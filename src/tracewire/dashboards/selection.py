"""Which features a dashboard build covers: all of them, a list, the nodes of graphs, or a slice.

A :class:`FeatureSelection` maps each layer to the sorted feature ids to build (``None`` = every
feature of the layer). Builds are split across jobs by intersecting a selection with a layer
range and/or a feature-id range (``restrict``); each job writes its own cards, so the jobs'
stores (or one shared store) together hold the whole selection.

Text form (``--features``): comma-separated items ``L:F`` (one feature), ``L:A-B`` (ids A..B
inclusive), ``L:*`` or ``L`` (the whole layer), e.g. ``"3:12,3:40-50,7"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tracewire.errors import InvalidArgumentError, TracewireError


class SelectionError(TracewireError):
    """A feature list, range or graph does not name valid features."""


@dataclass(frozen=True)
class FeatureSelection:
    """Feature ids per layer (sorted, unique int64); a layer mapped to ``None`` means all its features."""

    layers: Mapping[int, Tensor | None]

    @classmethod
    def all(cls, n_layers: int) -> FeatureSelection:
        return cls({layer: None for layer in range(n_layers)})

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]]) -> FeatureSelection:
        by_layer: dict[int, list[int]] = {}
        for layer, feature in pairs:
            by_layer.setdefault(int(layer), []).append(int(feature))
        return cls(
            {
                layer: torch.tensor(sorted(set(ids)), dtype=torch.int64)
                for layer, ids in sorted(by_layer.items())
            }
        )

    @classmethod
    def parse(cls, text: str) -> FeatureSelection:
        """Parse the ``--features`` text form (see the module docstring)."""
        whole: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            layer_text, _, feature_text = item.partition(":")
            try:
                layer = int(layer_text)
                if feature_text in ("", "*"):
                    whole.add(layer)
                elif "-" in feature_text:
                    start, stop = (int(x) for x in feature_text.split("-", 1))
                    if stop < start:
                        raise InvalidArgumentError("empty range")
                    pairs.extend((layer, f) for f in range(start, stop + 1))
                else:
                    pairs.append((layer, int(feature_text)))
            except ValueError:
                raise SelectionError(
                    f"--features item {item!r}: expected L:F, L:A-B (A <= B), L:* or L with integers"
                ) from None
            if layer < 0:
                raise SelectionError(f"--features item {item!r}: layers must be >= 0")
        if not whole and not pairs:
            raise SelectionError(f"--features {text!r} names no features")
        selection = cls.from_pairs(pairs)
        layers = dict(selection.layers)
        layers.update({layer: None for layer in whole})
        return cls(dict(sorted(layers.items())))

    @classmethod
    def from_graphs(cls, paths: Sequence[str | os.PathLike[str]]) -> FeatureSelection:
        """The feature nodes (layer, feature id) of saved graphs (``Graph.save`` files)."""
        from tracewire.graph import Graph

        pairs: list[tuple[int, int]] = []
        for path in paths:
            graph = Graph.load(path)
            pairs.extend((int(layer), int(feature)) for layer, _pos, feature in graph.features.tolist())
        if not pairs:
            raise SelectionError(f"the graphs {[str(p) for p in paths]} have no feature nodes")
        return cls.from_pairs(pairs)

    # ----------------------------------------------------------------- queries

    def ids(self, layer: int, d_transcoder: int) -> Tensor:
        """Sorted feature ids selected in ``layer`` (empty if the layer is not selected)."""
        if layer not in self.layers:
            return torch.zeros(0, dtype=torch.int64)
        chosen = self.layers[layer]
        if chosen is None:
            return torch.arange(d_transcoder, dtype=torch.int64)
        return chosen

    def validate(self, n_layers: int, d_transcoder: int) -> None:
        """Raise :class:`SelectionError` if a layer or feature id is out of range for the transcoders."""
        for layer, ids in self.layers.items():
            if not 0 <= layer < n_layers:
                raise SelectionError(
                    f"layer {layer} is out of range: the transcoders have layers 0..{n_layers - 1}"
                )
            if ids is not None and ids.numel() and int(ids.max()) >= d_transcoder:
                raise SelectionError(
                    f"feature {int(ids.max())} of layer {layer} is out of range: "
                    f"the transcoders have {d_transcoder} features per layer"
                )

    def count(self, d_transcoder: int) -> int:
        return sum(d_transcoder if ids is None else int(ids.numel()) for ids in self.layers.values())

    def restrict(
        self, layers: range | None = None, features: range | None = None, *, d_transcoder: int
    ) -> FeatureSelection:
        """Only layers in ``layers`` and feature ids in ``features`` (either may be None = no limit)."""
        out: dict[int, Tensor | None] = {}
        for layer in self.layers:
            if layers is not None and layer not in layers:
                continue
            ids = self.ids(layer, d_transcoder)
            if features is not None:
                ids = ids[(ids >= features.start) & (ids < features.stop)]
            if ids.numel():
                out[layer] = None if ids.numel() == d_transcoder else ids
        return FeatureSelection(out)

    def without(self, done: Mapping[int, Tensor], d_transcoder: int) -> FeatureSelection:
        """This selection minus features already done (per layer), e.g. cards already in the store."""
        out: dict[int, Tensor | None] = {}
        for layer in self.layers:
            ids = self.ids(layer, d_transcoder)
            finished = done.get(layer)
            if finished is not None and finished.numel():
                ids = ids[~torch.isin(ids, finished)]
            if ids.numel():
                out[layer] = None if ids.numel() == d_transcoder else ids
        return FeatureSelection(out)

    def key(self, d_transcoder: int) -> str:
        """A short stable hash of the selection (names a build job's checkpoint file)."""
        digest = hashlib.sha256()
        for layer in sorted(self.layers):
            digest.update(f"{layer}:".encode())
            digest.update(self.ids(layer, d_transcoder).numpy().astype("<i8").tobytes())
        return digest.hexdigest()[:12]

    def describe(self, d_transcoder: int) -> str:
        parts = []
        for layer in sorted(self.layers):
            ids = self.layers[layer]
            parts.append(f"L{layer}:all" if ids is None else f"L{layer}:{int(ids.numel())}")
        return f"{self.count(d_transcoder)} features ({', '.join(parts)})"


def parse_range(text: str | None, what: str) -> range | None:
    """``"A-B"`` (inclusive) or ``"A:B"`` (exclusive stop) or ``"A"`` -> range; None passes through."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    try:
        if ":" in value:
            start, stop = (int(x) for x in value.split(":", 1))
        elif "-" in value:
            first, last = (int(x) for x in value.split("-", 1))
            start, stop = first, last + 1
        else:
            start = int(value)
            stop = start + 1
    except ValueError:
        raise SelectionError(f"{what} {text!r}: expected A-B (inclusive), A:B (stop excluded) or A") from None
    if start < 0 or stop <= start:
        raise SelectionError(f"{what} {text!r} is empty or negative")
    return range(start, stop)
