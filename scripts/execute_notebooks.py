"""Execute the course notebooks top to bottom and write their outputs: the only way outputs are made.

    python scripts/execute_notebooks.py                 # every notebook, in order
    python scripts/execute_notebooks.py 04_lsq 05_pact  # some of them (names or paths)
    python scripts/execute_notebooks.py --cold          # each in an empty checkpoint cache of its own

Runs in the default (quick) profile with the same environment as the test run (see tests/conftest.py:
PYTHONHASHSEED=0, no MPLBACKEND), kernel ``python3``, then drops per-cell timing metadata and any
widget state so the committed files hold nothing machine-specific. Prints each notebook's wall time and records
it, with the CPU, the thread count and whether the quick FP32 model was already cached, in
``results/notebook_times.json`` (one entry per notebook, replaced when it is run again). With ``--cold`` every
notebook starts from an empty checkpoint cache of its own, as in a fresh clone (the FP32 model is then copied from
its weights of record, and everything quantized the notebook shows is trained in it): its time is a cold-cache time.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TIMES = ROOT / "results" / "notebook_times.json"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebook_env() -> None:
    """The environment every notebook kernel inherits (the same as under pytest)."""
    os.environ["PYTHONHASHSEED"] = "0"
    os.environ.pop("MPLBACKEND", None)
    os.environ.pop("SASREC_NB_PROFILE", None)
    os.environ.pop("SASREC_NB_DATASET", None)


def clean(nb: nbformat.NotebookNode) -> None:
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = KERNELSPEC
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)


def execute(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = time.perf_counter() - started
    clean(nb)
    nbformat.write(nb, path)
    return seconds


def select(args: list[str]) -> list[Path]:
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not args:
        return every
    chosen = [p for p in every if any(a in (p.name, p.stem, str(p)) or p.stem.startswith(a) for a in args)]
    missing = [a for a in args if not any(a in (p.name, p.stem, str(p)) or p.stem.startswith(a) for p in every)]
    if missing:
        raise SystemExit(f"no notebook matches {', '.join(missing)}; notebooks: {', '.join(p.stem for p in every)}")
    return chosen


def record_time(name: str, seconds: float, fp32_cached: bool, cold: bool) -> None:
    """Write one notebook's wall time into :data:`TIMES` beside those already there."""
    from sasrec_nb import files
    from sasrec_nb.machine import cpu_model

    times = files.read_json(TIMES, "notebook times") if TIMES.exists() else {"notebooks": {}}
    times["what"] = ("wall seconds of each notebook under scripts/execute_notebooks.py (quick profile); fp32_cached: "
                     "the quick FP32 checkpoint existed before it ran (otherwise the notebook trained it or copied it from "
                     "its weights of record); cold_cache: the notebook started from an empty checkpoint cache; "
                     "load_average_1: the machine's load when it ended (above the thread count, other work shared "
                     "the cores and the time is an upper bound)")
    times["notebooks"][name] = {"seconds": round(seconds, 1), "fp32_cached": fp32_cached, "cold_cache": cold,
                                "cpu": cpu_model(),
                                "threads": int(os.environ.get("SASREC_NB_THREADS", os.cpu_count() or 1)),
                                "load_average_1": round(os.getloadavg()[0], 2)}
    times["notebooks"] = dict(sorted(times["notebooks"].items()))
    files.write_json(TIMES, times)


def main(argv: list[str]) -> int:
    notebook_env()
    from sasrec_nb import config

    cold = "--cold" in argv
    total = 0.0
    for path in select([a for a in argv if a != "--cold"]):
        cache = tempfile.mkdtemp(prefix="sasrec-nb-cold-") if cold else None
        if cache:
            os.environ[config.CHECKPOINTS_ENV] = cache  # the kernel inherits it
        cached = (config.checkpoint_dir(config.get_profile("quick")) / "fp32.pt").exists()
        try:
            seconds = execute(path)
        finally:
            if cache:
                shutil.rmtree(cache, ignore_errors=True)
                os.environ.pop(config.CHECKPOINTS_ENV)
        record_time(path.stem, seconds, cached, cold)
        total += seconds
        print(f"{path.name}: {seconds:.1f} s", flush=True)
    print(f"total: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
