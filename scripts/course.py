"""Set up the course in a virtual environment and open it, or run its tests: one command each, on Linux, macOS
and Windows (only Python 3.10+ is needed to start).

    python scripts/course.py lab     # set up .venv/ (first time), then open JupyterLab on notebooks/
    python scripts/course.py test    # set up .venv/ (first time), then run the tests (both passes, see below)
    python scripts/course.py setup   # only set up

Set-up creates ``.venv/`` beside this repository, installs PyTorch's CPU build (from PyTorch's CPU index on Linux
and Windows, where a plain ``pip install torch`` pulls a CUDA build of several GB; from PyPI on macOS, whose wheels
are CPU builds), then the course with its test tools (``pip install -e ".[dev]"``). A PyTorch already in
``.venv/`` is kept. ``--torch`` and ``--torch-index`` choose another build (CI: ``--torch torch==2.13.0
--torch-index pypi``).

The tests are the README's two commands: ``pytest`` (unit tests, then every notebook under nbval), then
``pytest notebooks/ --one-thread`` (the notebooks again on one CPU thread, quantized runs retrained in a fresh
cache: float sums in another order, as on another CPU). It fails if the tests changed a tracked file.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TESTS = [["-m", "pytest"], ["-m", "pytest", "notebooks/", "--one-thread"]]


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def activated() -> dict[str, str]:
    """The environment an activated ``.venv`` gives: its scripts first on PATH (JupyterLab's terminals and nbgrader,
    which runs its ``alembic`` command, need them)."""
    scripts = venv_python().parent
    return {**os.environ, "VIRTUAL_ENV": str(VENV), "PATH": os.pathsep.join([str(scripts), os.environ.get("PATH", "")])}


def run(python: Path, *args: str) -> None:
    print("+", Path(python).name, *args, flush=True)
    subprocess.run([str(python), *args], cwd=ROOT, check=True, env=activated())


def has_module(python: Path, name: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {name}"], cwd=ROOT, capture_output=True).returncode == 0


def setup(torch_spec: str, torch_index: str) -> Path:
    """The virtual environment's interpreter, after making sure torch and the course are installed in it."""
    python = venv_python()
    if not python.exists():
        print(f"creating {VENV.name}/", flush=True)
        venv.create(VENV, with_pip=True)
        run(python, "-m", "pip", "install", "--upgrade", "pip")
    if not has_module(python, "torch"):
        index = ([] if torch_index == "pypi" else ["--index-url", torch_index]) if torch_index != "auto" else \
            ([] if sys.platform == "darwin" else ["--index-url", CPU_INDEX])
        run(python, "-m", "pip", "install", torch_spec, *index)
    run(python, "-m", "pip", "install", "-e", ".[dev]")
    return python


def tracked_state() -> str | None:
    """``git status`` and ``git diff`` of the checkout (None outside a git checkout)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
        diff = subprocess.run(["git", "diff"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return status.stdout + diff.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/course.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("setup", "lab", "test"))
    parser.add_argument("--torch", default="torch>=2.3", help="the PyTorch requirement (default: torch>=2.3)")
    parser.add_argument("--torch-index", default="auto",
                        help=f"'auto' ({CPU_INDEX} on Linux and Windows, PyPI on macOS), 'pypi' (pip's own "
                             "configuration), or an index URL")
    args = parser.parse_args(argv)
    python = setup(args.torch, args.torch_index)
    if args.command == "lab":
        return subprocess.run([str(python), "-m", "jupyter", "lab", "notebooks/"], cwd=ROOT, env=activated()).returncode
    if args.command == "test":
        before = tracked_state()
        for test in TESTS:
            run(python, *test)
        if before is not None and tracked_state() != before:
            print("the tests changed tracked files (git status):", flush=True)
            subprocess.run(["git", "status", "--short"], cwd=ROOT)
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
    except KeyboardInterrupt:
        sys.exit(130)
