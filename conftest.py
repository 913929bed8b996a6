"""Test-session environment, inherited by every notebook kernel that nbval starts."""
import os

os.environ["PYTHONHASHSEED"] = "0"          # stable printing of sets and dicts in notebooks
os.environ.pop("MPLBACKEND", None)          # an Agg backend would hide figures from nbval
os.environ.pop("SASREC_NB_PROFILE", None)   # notebooks are compared in the default profile
os.environ.pop("SASREC_NB_DATASET", None)
