"""Keep committed notebooks as source code: no outputs, no execution counts.

``python -m dedup.notebook_hygiene --check notebooks`` lists dirty notebooks and
exits 1; ``--strip`` cleans them in place (``make strip-notebooks``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def notebook_paths(root: Path) -> list[Path]:
    """Every ``.ipynb`` under ``root`` (checkpoints excluded)."""
    return sorted(p for p in root.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def is_dirty(notebook: dict) -> bool:
    """Whether any code cell holds outputs or an execution count."""
    return any(
        cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
        for cell in notebook.get("cells", [])
    )


def strip(notebook: dict) -> dict:
    """``notebook`` with code-cell outputs and execution counts removed (in place)."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    notebook.get("metadata", {}).pop("papermill", None)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup.notebook_hygiene", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list dirty notebooks, exit 1 if any")
    mode.add_argument("--strip", action="store_true", help="strip outputs in place")
    parser.add_argument("root", type=Path, nargs="?", default=Path("notebooks"))
    args = parser.parse_args(argv)
    dirty = []
    for path in notebook_paths(args.root):
        notebook = json.loads(path.read_text())
        if not is_dirty(notebook):
            continue
        dirty.append(path)
        if args.strip:
            path.write_text(json.dumps(strip(notebook), indent=1, ensure_ascii=False) + "\n")
    for path in dirty:
        print(f"{'stripped' if args.strip else 'dirty'}: {path}")
    return 1 if dirty and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
