"""sasrec_nb: the helper package of the SASRec QAT notebooks.

The notebooks import it as ``import sasrec_nb as snb``; the names below are the public API.
"""
from .config import Profile, get_profile, project_root
from .data import DataError, load_dataset, synthetic
from .experiments import adaround_model, fp32_model, load_split, qat_model
from .loaders import calibration_sequences, leave_one_out
from .model import SASRec
from .train import Popularity, evaluate, fit, load_into, read_checkpoint, save_checkpoint

__all__ = [
    "DataError", "Popularity", "Profile", "SASRec", "adaround_model", "calibration_sequences", "evaluate", "fit",
    "fp32_model", "get_profile", "leave_one_out", "load_dataset", "load_into", "load_split", "project_root",
    "qat_model", "read_checkpoint", "save_checkpoint", "synthetic",
]
