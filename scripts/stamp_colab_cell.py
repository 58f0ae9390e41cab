"""Write alignlab.colab.COLAB_CELL into the first cell of every solution notebook (then run `make release`).

    python scripts/stamp_colab_cell.py                 # every solutions/*/*.ipynb
    python scripts/stamp_colab_cell.py path.ipynb ...  # only these

A notebook whose first cell is not already a Colab setup cell gets a new first cell; otherwise its first
cell's source is replaced. Files already up to date are left byte-for-byte unchanged.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from alignlab.colab import COLAB_CELL  # noqa: E402

MARKER = '"google.colab" in sys.modules'
CELL_ID = "colab-setup"


def stamp(path: Path) -> bool:
    """Make the first cell of ``path`` the Colab cell; return True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "code" and first.source == COLAB_CELL:
        return False
    if first is not None and first.cell_type == "code" and MARKER in first.source:
        first.source = COLAB_CELL
    else:
        cell = nbformat.v4.new_code_cell(COLAB_CELL)
        ids = {c.get("id") for c in nb.cells}
        cell.id = CELL_ID if CELL_ID not in ids else cell.id
        nb.cells.insert(0, cell)
    first = nb.cells[0]
    first.outputs, first.execution_count = [], None
    nbformat.write(nb, path)
    return True


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted((ROOT / "solutions").glob("*/*.ipynb"))
    for path in paths:
        print(f"{'stamped ' if stamp(path) else 'up to date'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
