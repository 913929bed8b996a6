"""The student copies: every notebook's solutions come out, the rest of each exercise cell stays."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("make_student_copy", ROOT / "scripts" / "make_student_copy.py")
msc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(msc)


def test_strip_keeps_indentation_and_the_checker():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\n\ncheck(f)\n"
    assert msc.strip_solutions(src) == "def f(x):\n    raise NotImplementedError(\"your code here\")\n\n\ncheck(f)\n"


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="unbalanced"):
        msc.strip_solutions("### BEGIN SOLUTION\nx = 1\n")


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_student_copy_of_each_notebook(path, tmp_path):
    original = nbformat.read(path, as_version=4)
    solutions = sum(c.source.count("### BEGIN SOLUTION") for c in original.cells if c.cell_type == "code")
    assert solutions >= 1, "every lesson has at least one exercise with a solution"
    copy = nbformat.read(msc.student_copy(path, tmp_path), as_version=4)
    code = "\n".join(c.source for c in copy.cells if c.cell_type == "code")
    assert "SOLUTION" not in code and code.count("NotImplementedError") >= solutions
    assert all(not c.get("outputs") for c in copy.cells if c.cell_type == "code")
    assert "exercises.check_" in code
