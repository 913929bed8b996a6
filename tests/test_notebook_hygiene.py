"""Committed notebooks: one top-to-bottom run by scripts/execute_notebooks.py, nothing machine-specific."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
LEAKS = re.compile(r"(/work/|/root/|/home/|/Users/|/tmp/|[A-Z]:\\\\|0x[0-9a-fA-F]{6,}|\d+(\.\d+)?\s?(it/s|s/it)"
                   r"|\b\d+(\.\d+)?\s?(ms|seconds|sec)\b|Wall time|CPU times)")
EXPECTED = ["01_data_prep", "02_sasrec_fp32", "03_fake_quant_ste", "04_lsq", "05_pact", "06_dorefa", "07_apot",
            "08_adaround", "09_compare_methods", "10_int8_deployment"]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def output_texts(cell: dict):
    for out in cell.get("outputs", []):
        if "text" in out:
            yield out.get("name", ""), "".join(out["text"])
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                yield mime, "".join(value) if isinstance(value, list) else value


def test_notebooks_are_numbered_in_order():
    stems = [p.stem for p in NOTEBOOKS]
    assert all(re.match(r"^\d\d_[a-z0-9_]+$", s) for s in stems), stems
    assert stems == sorted(stems)
    assert [s for s in EXPECTED if s in stems] == stems[: len([s for s in EXPECTED if s in stems])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_hygiene(path: Path):
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in nb["metadata"], "widget state committed: re-run scripts/execute_notebooks.py"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"execution counts {counts}: not one top-to-bottom run"
    for i, cell in enumerate(code):
        assert "execution" not in cell["metadata"], f"cell {i}: timing metadata"
        for out in cell.get("outputs", []):
            assert out.get("name") != "stderr", f"cell {i}: output on stderr: {''.join(out.get('text', ''))[:200]}"
            assert out["output_type"] != "error", f"cell {i}: committed with an error"
            assert "image/svg+xml" not in out.get("data", {}), f"cell {i}: SVG figure (use PNG)"
        for kind, text in output_texts(cell):
            m = LEAKS.search(text)
            assert m is None, f"cell {i} ({kind}): '{m.group(0)}' — a machine path, address or timing in an output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_structure(path: Path):
    """Every lesson opens with what it teaches and closes with a recap, then exercises (an nbgrader assignment)."""
    nb = load(path)
    markdown = [("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert markdown and "learn" in markdown[0].lower(), "first cell: what you will learn"
    exercises = next(i for i, m in enumerate(markdown) if m.startswith("## Exercises"))
    assert "## Recap" in markdown[exercises - 1], "the recap comes right before the exercises"
    assert all("nbgrader" in c["metadata"] for c in nb["cells"][[("".join(c["source"])).startswith("## Exercises")
                                                                 for c in nb["cells"]].index(True):]), \
        "every exercise cell carries nbgrader metadata"
    first_code = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "get_profile()" in first_code, "the first code cell imports sasrec_nb and reads the profile"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_not_compared_are_asserted(path: Path):
    """A cell whose output nbval does not compare (it depends on trained weights, which differ between CPUs) checks
    what it shows with an assert, in the cell itself or in one of the next two code cells."""
    code = ["".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "code"]
    for i, source in enumerate(code):
        if "# NBVAL_IGNORE_OUTPUT" in source.splitlines():
            assert any("assert " in s for s in code[i:i + 3]), f"code cell {i}: output ignored by nbval, never asserted"


RESULTS = Path(__file__).resolve().parent.parent / "results"
#: a decimal in prose, outside $math$ and `code`; integers (epochs, users, bits) are not run numbers
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
MATH_OR_CODE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|`[^`]*`", re.DOTALL)


#: numbers a notebook quotes from a paper that happen to equal a run's number at their precision (the grid's runs
#: hold thousands of values): notebook -> the quoted tokens, each with its source
CITED = {"08_adaround": {"61.96"}}  # AdaRound paper, Table 1: ResNet-18 W4, AdaRound on a min-max grid


def numbers_in(obj, key: str = ""):
    """(key, value) of every number in a JSON object, the key being the innermost name above the value."""
    if isinstance(obj, dict):
        for name, value in obj.items():
            yield from numbers_in(value, name)
    elif isinstance(obj, list):
        for value in obj:
            yield from numbers_in(value, key)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield key, float(obj)


def run_numbers() -> set[float]:
    """Every number in the committed results JSON as a value, and the shares of FP32 (``ratio``) also as percentages:
    a share is quoted as 96.7 %, a difference or an interval bound is not multiplied by 100."""
    pairs = [kv for f in RESULTS.rglob("*.json") for kv in numbers_in(json.loads(f.read_text()))]
    return {v for _, v in pairs} | {100 * v for k, v in pairs if k == "ratio"}


def quotes_a_run(token: str, values: set[float]) -> bool:
    """``token`` (e.g. '0.1851', '96.7') has three or more significant digits and equals a result at its precision."""
    if len(token.replace(".", "").lstrip("0")) < 3:
        return False
    decimals, x = len(token.split(".")[1]), float(token)
    return any(abs(round(v, decimals) - x) < 10 ** -(decimals + 3) for v in values)


def test_quotes_a_run_detects_a_typed_metric():
    values = {0.18512, 96.71}
    assert quotes_a_run("0.1851", values) and quotes_a_run("96.7", values) and quotes_a_run("0.185", values)
    assert not quotes_a_run("0.1852", values) and not quotes_a_run("0.19", values) and not quotes_a_run("1.5", values)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_markdown_states_no_run_number(path: Path):
    """Prose cannot drift from the runs: a number from a results JSON is written into the notebook by code (a Markdown
    display built from the run, as notebook 04's 2-bit paragraph), never typed into a Markdown cell."""
    values = run_numbers()
    for i, cell in enumerate(load(path)["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        prose = MATH_OR_CODE.sub(" ", "".join(cell["source"]))
        typed = [t for t in DECIMAL.findall(prose) if quotes_a_run(t, values) and t not in CITED.get(path.stem, ())]
        assert not typed, f"markdown cell {i} types run numbers {typed}: render them from the results instead"
