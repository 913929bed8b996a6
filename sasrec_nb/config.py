"""Profiles (model size, training budget) and the project's folders.

Two profiles, chosen with ``SASREC_NB_PROFILE`` (dataset overridden with ``SASREC_NB_DATASET``):

``quick`` (default; CI and the committed notebook outputs) keeps the seed's hyperparameters
(d = 128, 4 heads, 2 blocks, max_len 50, dropout 0.2, lr 1e-3, 8 bits) on ``ml-100k`` and changes
only what a 2-core CPU needs: 20 epochs instead of 200, so that training fits in a notebook minute.
Few epochs suffice because the loss is the full softmax cross-entropy over all items at every
position (Klenitskiy & Vasilev 2023), which converges far faster than the paper's one-negative BCE.
Batches of 64 instead of 128: ml-100k has only 943 training sequences, and 15 updates per epoch
instead of 8 reach a better model in the same time. The learning rate decays to 0 (cosine): with a
constant rate the test metric of this small data set jumps by ±0.005 between epochs, and QAT,
which starts from the FP32 weights, would inherit a lucky or unlucky point rather than a minimum.

``full`` is the paper's ML-1M setting (Kang & McAuley 2018 §IV-B): d = 50, 2 blocks, 1 head,
max_len 200, dropout 0.2, lr 1e-3, batch 128, early stopping on validation NDCG@10. Its dataset
defaults to the ML-1M stand-in (``ml-1m-sasrec-trunc2``, the paper's preprocessed ML-1M with each
user's last two interactions removed); ``SASREC_NB_DATASET=ml-1m`` selects the official archive.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

PROFILE_ENV, DATASET_ENV, HOME_ENV = "SASREC_NB_PROFILE", "SASREC_NB_DATASET", "SASREC_NB_HOME"


@dataclass(frozen=True)
class Profile:
    name: str
    dataset: str
    embed_dim: int
    num_heads: int
    num_blocks: int
    max_len: int
    dropout: float
    lr: float
    batch_size: int
    epochs: int
    patience: int = 5          # evaluations without a better validation NDCG@10 before stopping
    min_delta: float = 0.0     # "better" means by more than this (full ranking NDCG@10)
    eval_every: int = 1        # epochs between validations
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # or "cosine": decay to 0 over the run
    loss: str = "ce"           # "ce": full softmax cross-entropy; "bce": the paper's one sampled negative
    train_windows: str = "last"  # "last": the most recent max_len items per user (reference); "all": whole history
    seed: int = 42
    # QAT fine-tuning from the FP32 checkpoint (always with a cosine decay of the learning rate)
    qat_epochs: int = 4
    qat_lr: float = 5e-5
    quant_lr: float = 1e-2     # relative step of quantizer parameters per Adam update (see quant.param_groups)
    weight_bits: int = 8
    act_bits: int = 8
    embed_bits: int = 8
    # AdaRound post-training reconstruction
    adaround_iters: int = 300      # per layer; the paper and AIMET use 10k (quick: CPU budget)
    adaround_lr: float = 1e-2      # Adam on V; 1e-3 in AIMET/BRECQ, raised to match the short run
    calib_sequences: int = 1024
    # evaluation
    eval_batch_size: int = 512
    num_negatives: int = 100
    progress: bool = False     # tqdm bars (off in the quick profile: stable notebook outputs)

    def to_dict(self) -> dict:
        return asdict(self)

    def model_kwargs(self) -> dict:
        return dict(embed_dim=self.embed_dim, num_heads=self.num_heads, num_blocks=self.num_blocks,
                    max_len=self.max_len, dropout=self.dropout)


PROFILES: dict[str, Profile] = {
    "quick": Profile(name="quick", dataset="ml-100k", embed_dim=128, num_heads=4, num_blocks=2, max_len=50,
                     dropout=0.2, lr=1e-3, batch_size=64, epochs=20, patience=100, eval_every=2,
                     lr_schedule="cosine"),
    "full": Profile(name="full", dataset="ml-1m-sasrec-trunc2", embed_dim=50, num_heads=1, num_blocks=2,
                    max_len=200, dropout=0.2, lr=1e-3, batch_size=128, epochs=200, patience=3, eval_every=2,
                    min_delta=5e-4, qat_epochs=6, qat_lr=1e-4, adaround_iters=2000, adaround_lr=3e-3,
                    progress=True),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The profile named, or ``$SASREC_NB_PROFILE`` (default ``quick``), with ``$SASREC_NB_DATASET``."""
    name = name or os.environ.get(PROFILE_ENV, "quick")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: set {PROFILE_ENV} to one of {', '.join(PROFILES)}")
    profile = PROFILES[name]
    dataset = os.environ.get(DATASET_ENV)
    if dataset:
        profile = replace(profile, dataset=dataset)
    return replace(profile, **overrides) if overrides else profile


def project_root() -> Path:
    """``$SASREC_NB_HOME``, else the source checkout holding this package, else the working directory."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).resolve()
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def data_dir() -> Path:
    return project_root() / "data"


def checkpoint_dir(profile: Profile) -> Path:
    return project_root() / "checkpoints" / dataset_slug(profile.dataset) / profile.name


def results_dir(profile: Profile) -> Path:
    return project_root() / "results" / dataset_slug(profile.dataset) / profile.name


def dataset_slug(dataset: str) -> str:
    """A folder name for a registry name or a path to a SASRec text file."""
    return Path(dataset).stem if ("/" in dataset or dataset.endswith(".txt")) else dataset


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
