"""Exceptions tracewire raises for bad input.

Every message names the file / field / value at fault and what was expected, so a user never
has to read a traceback from deep inside torch to learn what is wrong with their input.
"""

from __future__ import annotations


class TracewireError(Exception):
    """Base class of every error tracewire raises on purpose."""


class ModelLoadError(TracewireError):
    """A model spec could not be resolved or loaded (bad path, offline hub, unsupported arch)."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model's architecture has no row in the adapter table."""


class TranscoderFormatError(TracewireError):
    """A transcoder file or config is malformed or does not fit the model."""


class GraphFormatError(TracewireError):
    """A graph file is malformed, truncated or of an unknown version."""


class TargetError(TracewireError):
    """An attribution target cannot be resolved (e.g. a string that is not one token)."""


class InvalidArgumentError(TracewireError, ValueError):
    """An argument given to the API or CLI is out of range or inconsistent with the model/graph.

    Also a ``ValueError`` so that callers written against plain Python conventions still catch it.
    """


class PromptError(InvalidArgumentError):
    """A prompt is empty, too long for the model or otherwise unusable."""


class CheckpointError(TracewireError):
    """A training or build checkpoint is missing, corrupt, or was made with different settings."""


class ResourceLimitError(TracewireError):
    """A file declares a size (layers, features, d_model, decompressed bytes) beyond a sane bound.

    Raised before allocating, so that a small hostile file cannot make tracewire use gigabytes.
    """


class MissingExtraError(TracewireError):
    """An optional feature was used without its extra installed (e.g. ``pip install tracewire[ray]``)."""
