"""sasrec_nb: the helper package of the SASRec QAT notebooks.

The notebooks import it as ``import sasrec_nb as snb``; the names below are the public API. They are
loaded on first use (PEP 562), so ``python -m sasrec_nb.train`` runs its module only once.
"""
from importlib import import_module

_API = {
    "Profile": "config", "get_profile": "config", "project_root": "config",
    "DataError": "data", "load_dataset": "data", "synthetic": "data",
    "adaround_model": "experiments", "fp32_model": "experiments", "load_split": "experiments",
    "qat_model": "experiments",
    "calibration_sequences": "loaders", "leave_one_out": "loaders",
    "SASRec": "model",
    "Popularity": "training", "evaluate": "training", "fit": "training", "load_into": "training",
    "read_checkpoint": "training", "save_checkpoint": "training",
}
_SUBMODULES = ("config", "data", "exercises", "experiments", "files", "grid", "int8", "loaders", "machine", "metrics",
               "model", "plots", "quant", "report", "trace", "train", "training")

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sasrec_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(_SUBMODULES))
