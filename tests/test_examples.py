"""Every teaching notebook under examples/ runs top to bottom in a fresh kernel without errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
KERNEL_NAME = "prunescope-test-python"
CELL_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory) -> list[str]:
    """A kernelspec running *this* interpreter (the venv's), whatever kernels the machine has."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(
        root / KERNEL_NAME,
        overrides={
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (tests)",
        },
    )
    return [str(root)]


def run_notebook(path: Path, kernel_dirs: list[str]) -> nbformat.NotebookNode:
    """Execute ``path`` in its folder; a failing cell raises ``CellExecutionError``."""
    nb = nbformat.read(path, as_version=4)
    manager = AsyncKernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs)
    )
    client = NotebookClient(
        nb, km=manager, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs if out.output_type == "stream"
    )


def output_types(nb: nbformat.NotebookNode) -> set[str]:
    return {
        mime for cell in nb.cells if cell.cell_type == "code"
        for out in cell.outputs for mime in out.get("data", {})
    }


def test_there_are_examples():
    assert NOTEBOOKS, f"no notebooks in {EXAMPLES}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_examples_are_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has stored outputs"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_example_runs_top_to_bottom(path, kernel_dirs):
    nb = run_notebook(path, kernel_dirs)
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors
    if path.name == "01_pruning_basics.ipynb":
        check_pruning_basics(nb)


def check_pruning_basics(nb: nbformat.NotebookNode) -> None:
    """Real values: the printed dense accuracy is the engine's; the widget and Panel views rendered."""
    from prunescope.explorer import Explorer

    text = stream_text(nb)
    found = re.search(r"dense accuracy: ([0-9.eE+-]+)", text)
    assert found, text
    assert float(found.group(1)) == Explorer.from_sample("digits_mlp").dense_metrics().accuracy
    assert "erk erk 0.9" in text  # the widget followed ex.prune(...) made in code
    assert "1 - n/m" in text and "fc1 is still 0.5" in text  # bad input refused, state unchanged
    mimes = output_types(nb)
    assert "application/vnd.jupyter.widget-view+json" in mimes
    assert "application/vnd.holoviews_exec.v0+json" in mimes  # Panel views rendered inline
