"""Test-session environment, inherited by every notebook kernel that nbval starts.

``pytest notebooks/ --one-thread`` is the second pass of the README's test command: every notebook kernel
runs on one CPU thread and trains its runs afresh in a temporary checkpoint folder (from the committed FP32 weights
of record, as every run of the course starts), so float sums happen in another order (as on another CPU) and every
compared output must still match.
"""
import os
import shutil
import tempfile

os.environ["PYTHONHASHSEED"] = "0"          # stable printing of sets and dicts in notebooks
os.environ.pop("MPLBACKEND", None)          # an Agg backend would hide figures from nbval
os.environ.pop("SASREC_NB_PROFILE", None)   # notebooks are compared in the default profile
os.environ.pop("SASREC_NB_DATASET", None)


def pytest_addoption(parser):
    parser.addoption("--one-thread", action="store_true",
                     help="run notebook kernels on one CPU thread, training every quantized run afresh in a "
                          "temporary checkpoint folder (the second pass of the README's test command)")


def pytest_configure(config):
    if config.getoption("--one-thread"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SASREC_NB_THREADS"):
            os.environ[name] = "1"
        config._one_thread_cache = tempfile.mkdtemp(prefix="sasrec-nb-one-thread-")
        os.environ["SASREC_NB_CHECKPOINTS"] = config._one_thread_cache


def pytest_unconfigure(config):
    cache = getattr(config, "_one_thread_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
