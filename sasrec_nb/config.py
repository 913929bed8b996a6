"""Profiles (model size, training budget) and the project's folders.

Two profiles, chosen with ``SASREC_NB_PROFILE`` (dataset overridden with ``SASREC_NB_DATASET``):

``quick`` (default; CI and the committed notebook outputs) keeps the seed's model (d = 128, 4 heads,
2 blocks, max_len 50, dropout 0.2, 8 bits) on ``ml-100k`` and changes only what a 2-core CPU needs so
that FP32 training fits in about a minute on two free cores (a few minutes on one thread) instead of the
paper's 200 epochs:

- the loss is the full softmax cross-entropy over all items at every position (Klenitskiy & Vasilev
  2023), which converges in far fewer epochs than the paper's one-negative BCE;
- blocks in the paper's residual form x + g(LN(x)) (``residual="paper"``, §III-C); three seeds of each form put the
  paper's ahead on test and the port's on validation, so the runs do not choose between them
  (``results/sweeps/fp32_quick_residual.json``, docs/profiles.md);
- 12 epochs on *every* window of each history (``train_windows="all"``: 2.5x the labelled positions
  of the most recent window alone) with lr 3e-3 decayed to 0 (cosine), batches of 64. Fewer passes
  over more data, with a rate that a short run can afford; the decay ends the run in a minimum, not
  at a random point of a trajectory whose test metric jumps by ±0.005 between epochs (the QAT runs
  start from this point). ``results/sweeps/fp32_quick*.json`` hold the trials behind these choices;
- QAT fine-tunes for 4 epochs on the most recent window of each user (``qat_windows="last"``),
  which keeps every QAT notebook within its minute, at a rate of 2e-4 (cosine decay). Both were checked on
  validation at low bits (``python scripts/sweep_qat_length.py --profile quick ...``,
  ``results/sweeps/qat_length_quick.json``: LSQ, PACT and STE at W2E2A8 and W4E4A8, 4 or 12 epochs at 5e-5 or
  2e-4): at 4 epochs 2e-4 beats the earlier 5e-5 in the mean, and 12 epochs beat 4 — the quick FP32 model still gains
  from more training, so a longer QAT run also trains the model further. The profile keeps 4 epochs for the
  notebooks' time and takes the better rate.

``full`` is the paper's ML-1M setting (Kang & McAuley 2018 §IV-B): d = 50, 2 blocks, 1 head, max_len
200, dropout 0.2, lr 1e-3, batch 128, early stopping on validation NDCG@10. Like the quick profile it
trains on every window of each history (``train_windows="all"``: the 1,538 users with more than 200
training items contribute their older windows too, 8,586 windows instead of 6,040), and it stops only
after 10 validations (20 epochs) without a gain of 5e-4: validation NDCG@10 still climbs slowly after
epoch 70, where a patience of 3 stopped the earlier runs (``results/sweeps/fp32_full*.json``). Its
blocks keep the reference port's residual form (``residual="port"``, see :mod:`sasrec_nb.model`); the
paper's form is not ahead on this data (``results/sweeps/fp32_full_long_paper.json``). The quick profile
builds the paper's. Its dataset defaults to the ML-1M stand-in (``ml-1m-sasrec-trunc2``, the paper's
preprocessed ML-1M with each user's last two interactions removed); ``SASREC_NB_DATASET=ml-1m`` selects
the official archive.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as fields_of
from pathlib import Path

import torch

PROFILE_ENV, DATASET_ENV, HOME_ENV = "SASREC_NB_PROFILE", "SASREC_NB_DATASET", "SASREC_NB_HOME"
#: where cached runs live (default ``<project>/checkpoints``): a second test pass points it at a fresh folder
CHECKPOINTS_ENV = "SASREC_NB_CHECKPOINTS"
#: CPU threads for torch (default: torch's own choice); ``1`` reorders float sums the way another CPU does
THREADS_ENV = "SASREC_NB_THREADS"
#: Reference points, not runs of this project: the reference PyTorch port of SASRec (the paper's binary cross-entropy,
#: d = 50, max_len 200, 200 epochs) on each dataset, test users, full ranking unless named; popularity is the
#: most-interacted-unseen baseline under full ranking. Notebook 02 sets its model beside them.
REFERENCE_PORT: dict[str, dict[str, float]] = {
    "ml-100k": {"full ndcg@10": 0.103, "full hit@10": 0.191, "sampled100 ndcg@10": 0.418,
                "popularity ndcg@10": 0.045},
    "ml-1m-sasrec-trunc2": {"full ndcg@10": 0.134, "sampled100 ndcg@10": 0.619},
}

#: the values each string setting may take
CHOICES = {"lr_schedule": ("constant", "cosine"), "loss": ("ce", "bce"), "train_windows": ("last", "all"),
           "qat_windows": ("last", "all"), "residual": ("paper", "port")}
#: settings that count something and must be at least 1
COUNTS = ("embed_dim", "num_heads", "num_blocks", "max_len", "batch_size", "epochs", "patience", "eval_every",
          "qat_epochs", "adaround_iters", "calib_sequences", "eval_batch_size", "num_negatives")


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
    residual: str = "paper"    # block form: "paper" x + g(LN(x)) (§III-C), or "port" (the reference port's)
    seed: int = 42
    # QAT fine-tuning from the FP32 checkpoint (always with a cosine decay of the learning rate)
    qat_epochs: int = 4
    qat_lr: float = 5e-5
    qat_lr_low_bits: float | None = None  # the rate of QAT runs with weights or tables at ≤ low_bits; None: qat_lr
    low_bits: int = 2
    qat_windows: str = "last"  # training windows QAT fine-tunes on (a few epochs: the most recent suffice)
    quant_lr: float = 1e-2     # relative step of quantizer parameters per Adam update (see quant.param_groups)
    qat_distill: float = 0.0   # weight α of distillation from the FP32 model in the QAT loss (losses.py); 0: none
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
    # commit the FP32 weights with the results (results/<dataset>/<profile>/fp32.pt): FP32 training differs between
    # CPUs, so a grid that takes several sessions (on several machines), and notebooks executed on another machine
    # than the grid, can only start from one FP32 model this way
    fp32_of_record: bool = False

    def __post_init__(self) -> None:
        """Refuse a setting no run could use, before anything loads or trains."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"profile {self.name!r}: {name} must be one of {', '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, name)!r}")
        for name in COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"profile {self.name!r}: {name} must be a whole number of at least 1, got {value!r}")
        for name in ("weight_bits", "act_bits", "embed_bits", "low_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
                raise ValueError(f"profile {self.name!r}: {name} must be a whole number of bits (1 to 16), "
                                 f"got {value!r}")
        if not 0.0 <= self.qat_distill <= 1.0:
            raise ValueError(f"profile {self.name!r}: qat_distill (the distillation weight) must lie in [0, 1], "
                             f"got {self.qat_distill!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"profile {self.name!r}: dropout must lie in [0, 1), got {self.dropout!r}")
        rates = ("lr", "qat_lr", "quant_lr", "adaround_lr", "weight_decay", "min_delta")
        for name in rates + (("qat_lr_low_bits",) if self.qat_lr_low_bits is not None else ()):
            if not getattr(self, name) >= 0:
                raise ValueError(f"profile {self.name!r}: {name} must be ≥ 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def model_kwargs(self) -> dict:
        return dict(embed_dim=self.embed_dim, num_heads=self.num_heads, num_blocks=self.num_blocks,
                    max_len=self.max_len, dropout=self.dropout, residual=self.residual)


#: the profile fields a trained checkpoint depends on (a cached run trained with other values is stale)
FP32_FIELDS = ("dataset", "embed_dim", "num_heads", "num_blocks", "max_len", "dropout", "residual", "lr",
               "batch_size", "epochs", "patience", "min_delta", "eval_every", "weight_decay", "lr_schedule",
               "loss", "train_windows", "seed")
QAT_FIELDS = (*FP32_FIELDS, "qat_epochs", "qat_lr", "qat_windows", "quant_lr", "qat_distill", "embed_bits",
              "calib_sequences")
ADAROUND_FIELDS = (*FP32_FIELDS, "adaround_iters", "adaround_lr", "embed_bits", "calib_sequences")
PTQ_FIELDS = (*FP32_FIELDS, "embed_bits", "calib_sequences")
#: the control run ``fp32_ft``: the FP32 model fine-tuned with QAT's recipe, no quantizer
FINETUNE_FIELDS = (*FP32_FIELDS, "qat_epochs", "qat_lr", "qat_windows", "qat_distill")


def qat_recipe(profile: Profile, weight_bits: int) -> Profile:
    """The profile a QAT run with weights at ``weight_bits`` (tables at ``profile.embed_bits``) fine-tunes with:
    ``qat_lr_low_bits`` in place of ``qat_lr`` when the weights or the tables are at ``low_bits`` or fewer, where
    validation favours a higher rate than at 4 and 8 bits (``PROFILES`` below states the sweeps). A run records the
    rate it trained with (``qat_lr``), so a cached run is stale exactly when its own rate changed."""
    low = profile.qat_lr_low_bits is not None and min(weight_bits, profile.embed_bits) <= profile.low_bits
    return replace(profile, qat_lr=profile.qat_lr_low_bits) if low else profile


def run_fields(method: str) -> tuple[str, ...]:
    """The profile fields a run of ``method`` (``"fp32"``, the control ``"fp32_ft"``, ``"adaround"``, a round-to-nearest
    baseline ``rtn_*`` or a QAT method) depends on."""
    if method.startswith("rtn_"):
        return PTQ_FIELDS
    return {"fp32": FP32_FIELDS, "fp32_ft": FINETUNE_FIELDS, "adaround": ADAROUND_FIELDS}.get(method, QAT_FIELDS)


def changed_settings(saved: dict, profile: Profile, fields: tuple[str, ...]) -> list[str]:
    """``"field: old -> new"`` for each of ``fields`` where the recorded settings ``saved`` differ from ``profile``.
    A setting added after a run was recorded counts as its default (the behaviour the run had): a run recorded
    before ``qat_distill`` existed trained without distillation."""
    now, default = profile.to_dict(), {f.name: f.default for f in fields_of(Profile)}
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" if k in saved else f"{k}: not recorded -> {now[k]!r}"
            for k in fields if saved.get(k, default.get(k, ...)) != now[k]]


#: QAT length and rate are chosen on validation (``scripts/sweep_qat_length.py``, results/sweeps/qat_length_*.json).
#: Full profile, LSQ W2E2A8: best validation NDCG@10 0.131 (6 epochs at 1e-4), 0.147 (6 at 3e-4), 0.147 (12 at 1e-4),
#: 0.151 (12 at 3e-4), FP32 0.195: the higher rate counts most; doubling the length adds 0.004 (2 % of FP32) at twice
#: the CPU time (about 500 s a run on one core), so the full grid runs 6 epochs at 3e-4. Later sweeps from the FP32
#: weights of record (results/sweeps/qat_rate_full*.json, best validation NDCG@10 of 6 epochs, FP32 0.194) put the best
#: rate at different places for different widths: at W2E2A8 (LSQ) 0.145 at 3e-4, 0.153 at 1e-3, 0.156 at 3e-3 (0.163
#: with 12 epochs); at W3E3A8 3e-3 is ahead for LSQ and STE (0.1801 / 0.1813 against 0.1763 / 0.1776); at W4E4A8 the
#: rates are within 0.001 (STE, LSQ); at W8E8A8 3e-4 is ahead (0.1928 / 0.1934 against 0.1920 / 0.1915). So the grid's
#: QAT runs take 3e-3 where the weights or tables are at 3 bits or fewer and 3e-4 elsewhere (``qat_lr_low_bits``,
#: ``low_bits``, :func:`qat_recipe`); the grid's rows at 3 and 2 bits, and the fine-tuning control, were run at both.
PROFILES: dict[str, Profile] = {
    "quick": Profile(name="quick", dataset="ml-100k", embed_dim=128, num_heads=4, num_blocks=2, max_len=50,
                     dropout=0.2, lr=3e-3, batch_size=64, epochs=12, patience=100, eval_every=2,
                     lr_schedule="cosine", train_windows="all", qat_lr=2e-4, fp32_of_record=True),
    "full": Profile(name="full", dataset="ml-1m-sasrec-trunc2", embed_dim=50, num_heads=1, num_blocks=2,
                    max_len=200, dropout=0.2, lr=1e-3, batch_size=128, epochs=200, patience=10, eval_every=2,
                    min_delta=5e-4, train_windows="all", residual="port", qat_epochs=6, qat_lr=3e-4,
                    qat_lr_low_bits=3e-3, low_bits=3, adaround_iters=2000, adaround_lr=3e-3, progress=True,
                    fp32_of_record=True),
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


def checkpoint_root() -> Path:
    """``$SASREC_NB_CHECKPOINTS``, else ``<project>/checkpoints`` (git-ignored: cached runs, never committed)."""
    return Path(os.environ[CHECKPOINTS_ENV]).resolve() if os.environ.get(CHECKPOINTS_ENV) \
        else project_root() / "checkpoints"


def checkpoint_dir(profile: Profile) -> Path:
    from .data import dataset_slug

    return checkpoint_root() / dataset_slug(profile.dataset) / profile.name


def results_dir(profile: Profile) -> Path:
    """Where the results of record live (committed); only ``python -m sasrec_nb.train`` writes there."""
    from .data import dataset_slug

    return project_root() / "results" / dataset_slug(profile.dataset) / profile.name


def apply_thread_setting() -> None:
    """``torch.set_num_threads($SASREC_NB_THREADS)`` when the variable is set (the one-thread test pass)."""
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))


apply_thread_setting()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
