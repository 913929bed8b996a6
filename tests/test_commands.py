"""The README's commands, scripts/course.py and .ci/run say the same thing."""
import importlib.util
import os
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def course():
    spec = importlib.util.spec_from_file_location("course", ROOT / "scripts" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_block(heading: str) -> list[str]:
    """The commands of the first ```bash block after ``heading`` (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"{re.escape(heading)}.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_the_readme_test_commands_are_what_course_py_runs():
    commands = readme_block("## Test")
    assert [shlex.split(c) for c in commands] == [["pytest"], ["pytest", "notebooks/", "--one-thread"]]
    assert [t[2:] for t in course().TESTS] == [c[1:] for c in (shlex.split(x) for x in commands)]
    assert all(t[:2] == ["-m", "pytest"] for t in course().TESTS)


def test_ci_runs_the_course_script_and_checks_the_checkout_is_clean():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 scripts/course.py test" in ci
    assert "git status --porcelain" in ci


def test_the_two_set_up_commands_are_in_the_readme():
    assert readme_block("## Set up and run")[:2] == ["python scripts/course.py lab", "python scripts/course.py test"]


def test_course_py_runs_its_commands_as_in_an_activated_environment():
    env = course().activated()
    scripts = str(course().venv_python().parent)
    assert env["PATH"].split(os.pathsep)[0] == scripts  # nbgrader calls `alembic`, Lab's terminals call pip
    assert env["VIRTUAL_ENV"] == str(course().VENV)
