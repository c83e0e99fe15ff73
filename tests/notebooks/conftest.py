"""Fixtures for the notebook tests: throwaway notebooks written with nbformat."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NotebookWriter = Callable[[str, str, list[str]], Path]


@pytest.fixture
def write_notebook(tmp_path: Path) -> NotebookWriter:
    """``write_notebook(name, parameters_source, code_cells)`` -> path of a clean notebook in tmp_path."""
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)

    def write(name: str, parameters: str, cells: list[str]) -> Path:
        nb = new_notebook(metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        params = new_code_cell(parameters)
        params.metadata["tags"] = ["parameters"]
        nb.cells = [new_markdown_cell(f"# {name}"), params, *(new_code_cell(c) for c in cells)]
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        return path

    return write
