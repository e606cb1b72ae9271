"""Run notebook cells in a real Jupyter kernel (nbclient + ipykernel), as a user's Jupyter would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (dev extra)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (dev extra)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (dev extra)")

#: Per-cell limit: generous for a loaded 2-core box; the notebooks themselves take seconds.
CELL_TIMEOUT_S = 600


@contextmanager
def kernel(notebook: Any, cwd: Path) -> Iterator[Any]:
    """A started kernel (cwd ``cwd``) and its client; the kernel lives until the block ends."""
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    # The kernel inherits this environment (PYTHONPATH, TRACEWIRE_CACHE, HF_HUB_OFFLINE).
    with client.setup_kernel(env=dict(os.environ)):
        yield client


def run_cells(client: Any, notebook: Any, indices: range | None = None) -> None:
    """Execute the code cells (those of ``indices`` only, if given) in order; a failing cell raises."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and (indices is None or index in indices):
            client.execute_cell(cell, index)


def code_notebook(*sources: str) -> Any:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])


def html_output(cell: Any) -> str:
    """The text/html of a cell's displayed result (its execute_result or display_data)."""
    for output in cell.outputs:
        if output.output_type in {"execute_result", "display_data"} and "text/html" in output.data:
            return str(output.data["text/html"])
    raise AssertionError(f"cell shows no HTML; outputs: {cell.outputs}")
