"""Write each notebook's install cell, and a check of what it installed, as a notebook of its own.

    python scripts/colab_install_cells.py DEST notebooks/*.ipynb

``make test-colab`` executes these in a Colab-like venv, from a folder that holds the built
wheel: the install cell must install lucid-jax (from the wheel) and the check cell import what
the notebooks use. The notebooks themselves are executed once, by ``make test-notebooks``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

CHECK = """\
import importlib.metadata

import lucid_jax
import lucid_jax.flax.linen
import lucid_jax.flax.nnx
import lucid_jax.nn

print("lucid_jax", lucid_jax.__version__, "installed by the first cell")
assert importlib.metadata.version("lucid-jax") == lucid_jax.__version__
"""


def main(argv: list[str]) -> int:
    dest, notebooks = Path(argv[0]), [Path(a) for a in argv[1:]]
    if not notebooks:
        raise SystemExit(__doc__)
    dest.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        notebook.cells = [code[0], nbformat.v4.new_code_cell(CHECK)]
        nbformat.write(notebook, dest / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
