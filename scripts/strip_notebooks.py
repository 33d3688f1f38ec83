"""Strip outputs and execution counts from the notebooks before committing (CI fails on a notebook with outputs).

    python scripts/strip_notebooks.py [NOTEBOOK...]      # default: notebooks/*.ipynb
"""

import sys
from pathlib import Path

import nbformat

paths = [Path(p) for p in sys.argv[1:]] or sorted(Path(__file__).parent.parent.glob("notebooks/*.ipynb"))
for path in paths:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    print(f"stripped {path}")
