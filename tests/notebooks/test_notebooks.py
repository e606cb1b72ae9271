"""The tutorial notebooks in ``notebooks/`` run top to bottom in a real Jupyter kernel.

Each one asserts what it teaches in its own cells (a target's probability against a plain forward
pass, an ablation moving a target by minus its edge, a trained set's NMSE, a hub-loaded set equal
to the published weights), so a notebook that runs is a notebook whose claims hold. They are
stored without outputs. The two on the embedded SmolLM2 are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebooks.kernel import kernel, nbformat, run_cells

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CASES = [
    pytest.param("01_attribute_read_prune.ipynb", marks=pytest.mark.slow),
    pytest.param("02_interventions_and_steering.ipynb", marks=pytest.mark.slow),
    "03_train_and_evaluate.ipynb",
    "04_your_model_and_hub_transcoders.ipynb",
]


def test_every_notebook_is_tested():
    names = {case if isinstance(case, str) else case.values[0] for case in CASES}
    assert names == {path.name for path in NOTEBOOKS.glob("*.ipynb")}


@pytest.mark.parametrize("name", CASES)
def test_notebook_runs_top_to_bottom(name: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "outputs not stripped"
    assert any("assert " in cell.source for cell in code), "the notebook checks nothing"
    with kernel(notebook, tmp_path) as client:
        run_cells(client, notebook)  # a failing cell (or assert) raises CellExecutionError
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
