"""Which runs the results of record hold: one method at chosen bit widths, or the comparison grid (``--all``).

The grid compares quantization-aware training with post-training quantization where it matters: the weights and
the item/position tables (most of the model's bytes, and its first and last layer) at the same width b,
W b E b A8 for b = 8, 4, 3, 2; activation bits at W8E8A4 and W4E4A4; and A3 / A2 for the two methods that learn
their activation range for low bits (PACT and LSQ). Every row holds the two round-to-nearest baselines
(``rtn_absmax``, ``rtn_mse``), AdaRound and the QAT methods (all five, or LSQ and PACT at A3 / A2); every QAT and
AdaRound run at ≤ 4 bits anywhere is done with three seeds from the same FP32 model, so that its spread can be read
beside its mean, and every QAT run records its paired difference to each post-training run of its row.

Before the grid, with the same three seeds: the control ``fp32_ft``, the FP32 model fine-tuned with QAT's recipe and no
quantizer (:func:`sasrec_nb.experiments.finetuned_fp32`), so that what QAT's extra training does on its own is read
beside what a QAT row keeps; once per QAT rate of the grid (a profile with ``qat_lr_low_bits`` trains its low-bit rows
at another rate). Its results sit in the results folder's ``controls/``, apart from the grid's rows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import Profile, qat_recipe
from .experiments import FINETUNED, PTQ_BASELINES, run_name
from .quant import METHODS

#: (weight bits, table bits, activation bits, methods): the grid's rows
#: (post-training rows first: every QAT run is compared with them, by a paired interval, when it is recorded)
ALL = (*PTQ_BASELINES, "adaround", *(m for m in METHODS if m != "adaround"))
ROWS = [*((b, b, 8, ALL) for b in (8, 4, 3, 2)), (8, 8, 4, ALL), (4, 4, 4, ALL),
        *((8, 8, a, (*PTQ_BASELINES, "adaround", "lsq", "pact")) for a in (3, 2))]
#: seeds beyond the profile's own, as offsets from it, for rows at ≤ 4 bits
EXTRA_SEEDS = (1, 2)


@dataclass(frozen=True)
class Run:
    """One run of record; ``seed`` None means the profile's own (and is left out of the name); ``qat_lr`` is the
    control's rate where it is not the profile's ``qat_lr``."""

    method: str
    weight_bits: int | None = None
    embed_bits: int | None = None
    act_bits: int | None = None
    seed: int | None = None
    qat_lr: float | None = None

    @property
    def name(self) -> str:
        return run_name(self.method, self.weight_bits, self.act_bits, self.embed_bits or 8, self.seed, self.qat_lr)


FP32 = Run("fp32")


def seeded(method: str) -> bool:
    return method not in PTQ_BASELINES and method != "fp32"


def control_rates(profile: Profile, widths: list[tuple[int, int]]) -> list[float | None]:
    """The QAT rates of runs at these (weight, table) widths, each once, as a control's ``Run.qat_lr`` (None for the
    profile's own ``qat_lr``)."""
    rates = (qat_recipe(replace(profile, embed_bits=eb), wb).qat_lr for wb, eb in widths)
    return list(dict.fromkeys(None if lr == profile.qat_lr else lr for lr in rates))


def grid_runs(profile: Profile) -> list[Run]:
    """FP32 first (every run starts from it), the fine-tuning control with the grid's seeds at each QAT rate of the
    grid, then the grid row by row, each method with its seeds."""
    seeds = [None, *(profile.seed + k for k in EXTRA_SEEDS)]
    rates = control_rates(profile, [(wb, eb) for wb, eb, _, _ in ROWS])
    runs = [FP32, *(Run(FINETUNED, seed=s, qat_lr=lr) for lr in rates for s in seeds)]
    for wb, eb, ab, methods in ROWS:
        low = min(wb, eb, ab) <= 4
        for m in methods:
            runs += [Run(m, wb, eb, ab, s) for s in (seeds if low and seeded(m) else [None])]
    return runs


def method_runs(methods: list[str], bits: list[int], act_bits: int, embed_bits: int,
                seeds: list[int] | None, profile: Profile) -> list[Run]:
    """FP32 first, then each method at each weight width (each seed; the profile's seed is the unnamed run); the
    fine-tuning control has no bit widths: it runs once per seed at each QAT rate those widths train with."""
    own = list(dict.fromkeys(None if s == profile.seed else s for s in seeds)) if seeds else [None]
    rates = control_rates(profile, [(b, embed_bits) for b in bits]) if FINETUNED in methods else []
    runs = [FP32, *(Run(FINETUNED, seed=s, qat_lr=lr) for lr in rates for s in own)]
    for b in bits:
        for m in methods:
            if m in ("fp32", FINETUNED):
                continue
            runs += [Run(m, b, embed_bits, act_bits, s) for s in (own if seeded(m) else [None])]
    return runs
