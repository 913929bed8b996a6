"""The course as an nbgrader assignment, end to end in a temporary course folder (docs/teaching.md):
``nbgrader generate_assignment`` releases the notebooks without solution code or model answers; ``nbgrader autograde``
gives the source notebooks full marks and the unsolved release zero for every implementation task."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="nbgrader is in the 'course' extra (pip install -e '.[course]')")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ASSIGNMENT = "qat"


def nbgrader(course: Path, *args: str) -> None:
    # nbgrader runs its database migrations with the `alembic` command: the environment's scripts must be on PATH
    # even when the interpreter was started by its full path, without activating the environment
    env = {**os.environ, "PYTHONHASHSEED": "0",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"], cwd=course,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def graded_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.course_id = "sasrec-qat"\nc.Execute.timeout = 900\n')
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for path in NOTEBOOKS:
        shutil.copy(path, source / path.name)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    for student, folder in (("instructor", source), ("student", course / "release" / ASSIGNMENT)):
        target = course / "submitted" / student / ASSIGNMENT
        target.mkdir(parents=True)
        for path in NOTEBOOKS:
            shutil.copy(folder / path.name, target / path.name)
    nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force")
    return course


def test_every_notebook_is_an_assignment_part_with_graded_exercises():
    for path in NOTEBOOKS:
        cells = graded_cells(path)
        assert cells, f"{path.name}: no graded cell"
        ids = [c["metadata"]["nbgrader"]["grade_id"] for c in json.loads(path.read_text())["cells"]
               if "nbgrader" in c.get("metadata", {})]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id"


def test_the_release_holds_no_solution_and_no_model_answer(course):
    for path in NOTEBOOKS:
        released = json.loads((course / "release" / ASSIGNMENT / path.name).read_text())
        text = "\n".join("".join(c["source"]) for c in released["cells"])
        assert "BEGIN SOLUTION" not in text and "*Model answer.*" not in text, path.name
        source = json.loads(path.read_text())
        answers = sum(c["metadata"].get("nbgrader", {}).get("solution", False) for c in source["cells"])
        assert text.count("YOUR CODE HERE") + text.count("YOUR ANSWER HERE") >= answers, path.name


def scores(course: Path, student: str) -> dict[str, tuple[float, float]]:
    """``{notebook: (autograded score, autogradable points)}`` from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission(ASSIGNMENT, student)
        code = lambda nb: [g for g in nb.grades if g.cell.cell_type == "code"]  # noqa: E731
        return {nb.name: (sum(g.auto_score or 0 for g in code(nb)), sum(g.max_score for g in code(nb)))
                for nb in submission.notebooks}


def test_the_source_notebooks_get_full_marks(course):
    for name, (score, points) in scores(course, "instructor").items():
        assert points > 0 and score == points, f"{name}: {score} of {points} autograded points"


def test_the_unsolved_release_gets_zero_for_the_implementation_tasks(course):
    for name, (score, points) in scores(course, "student").items():
        assert points > 0 and score == 0, f"{name}: {score} of {points} autograded points without any solution"
