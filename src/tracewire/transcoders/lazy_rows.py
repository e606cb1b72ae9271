"""Decoder rows read from disk on demand, so that huge decoders need not sit in memory.

Attribution only ever needs the decoder rows of the features that are active on the prompt
(typically a few hundred out of tens of thousands per layer), while a cross-layer transcoder's
decoders grow with L²/2. ``LazyRows`` keeps only the file name and the header's shape and dtype,
and reads the asked rows with ``safe_open(...).get_slice(...)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from tracewire.errors import TranscoderFormatError
from tracewire.limits import check_finite
from tracewire.transcoders.files import open_safetensors, safetensors_dtype


class LazyRows:
    """The rows (first-axis slices) of one tensor of a safetensors file, read when asked for."""

    def __init__(self, path: Path, tensor: str) -> None:
        self.path = Path(path)
        self.tensor = tensor
        with open_safetensors(self.path) as f:
            if tensor not in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                raise TranscoderFormatError(f"{self.path}: missing tensor {tensor!r}")
            header = f.get_slice(tensor)
            self.shape: tuple[int, ...] = tuple(int(s) for s in header.get_shape())
            self.dtype: torch.dtype = safetensors_dtype(
                header.get_dtype(), where=f"{self.path}, tensor {tensor!r}"
            )

    @property
    def location(self) -> str:
        """Where these rows live, for error messages."""
        return f"{self.path}, tensor {self.tensor!r}"

    def read(self, rows: Tensor) -> Tensor:
        """Rows ``rows`` (any order, repeats allowed) as a CPU tensor ``[n, *shape[1:]]``, file dtype."""
        index = rows.detach().to("cpu", torch.long).reshape(-1)
        if index.numel() == 0:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= self.shape[0]:
            raise IndexError(
                f"{self.location}: row index out of range [0, {self.shape[0]}): min {lo}, max {hi}"
            )
        unique, inverse = torch.unique(index, sorted=True, return_inverse=True)
        with open_safetensors(self.path) as f:
            part: Tensor = f.get_slice(self.tensor)[unique.tolist()]
        check_finite(part, where=self.location, error=TranscoderFormatError)
        return part[inverse]

    def read_all(self) -> Tensor:
        """The whole tensor (used when saving a lazily loaded set)."""
        with open_safetensors(self.path) as f:
            whole: Tensor = f.get_tensor(self.tensor)
        return whole

    def __repr__(self) -> str:
        return f"LazyRows({str(self.path)!r}, {self.tensor!r}, shape={self.shape})"
