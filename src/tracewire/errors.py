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
