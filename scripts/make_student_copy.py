"""Write student copies of the notebooks: exercise solutions removed, outputs cleared.

    python scripts/make_student_copy.py [OUT_DIR]      # default: student/

Code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (the nbgrader convention) is replaced by
``raise NotImplementedError``, indented like the solution. The checker call after it stays.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\n.*?^[ \t]*### END SOLUTION\n?", re.M | re.S)


def strip_solutions(source: str) -> str:
    if source.count("### BEGIN SOLUTION") != source.count("### END SOLUTION"):
        raise ValueError("unbalanced BEGIN/END SOLUTION markers")
    return SOLUTION.sub(lambda m: f"{m['indent']}raise NotImplementedError(\"your code here\")\n", source)


def student_copy(path: Path, out_dir: Path) -> Path:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    nbformat.write(nb, target)
    return target


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else ROOT / "student"
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        print(student_copy(path, out_dir).relative_to(out_dir.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
