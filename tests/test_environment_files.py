"""environment.yml (the conda route) names every dependency pyproject.toml declares, at the same floor."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # pip name → conda-forge name where they differ


def requirement(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [requirement(s) for s in project["dependencies"]]
    for extra in ("dev", "deploy", "course", "bridge"):
        wanted += [requirement(s) for s in project["optional-dependencies"][extra]
                   if not s.startswith(project["name"] + "[")]  # an extra that includes another
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(requirement(d) for d in env["dependencies"] if isinstance(d, str))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip, "environment.yml must install the package itself"
    for name, floor in wanted:
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{name} is in pyproject.toml but not in environment.yml"
        assert conda[conda_name] == floor, f"{name}: pyproject says {floor!r}, environment.yml {conda[conda_name]!r}"
    assert "pip" in conda and conda.get("python"), "environment.yml lists python and pip explicitly"
