"""Where a fixed activation grid ends: the range-setting rules of post-training calibrators.

A fixed (never trained) uniform grid spans [−c, c] (signed) or [0, c] (after ReLU) with step s = c / q_max.
Values within half a step of a level round to it, values beyond c clip. Three rules choose c from a
calibration sample x (real positions only, see :func:`~sasrec_nb.quant.calibrate_activations`):

    absmax      c = max|x|: nothing clips, and the largest value alone sets the step
    percentile  c = the 99.99th percentile of |x|: TensorRT's percentile calibrator, AIMET's percentile scheme
    mse         c = argmin over c_k = (k / 100) · max|x|, k = 1 … 100, of mean (x − Q_c(x))²: TensorRT's MSE
                calibrator; AIMET's TF-Enhanced scheme minimises the same kind of quantization noise

They differ on a heavy-tailed activation (notebook 09 §4: a 99th percentile of 1.1 and a max of 59): abs-max keeps
the tail and rounds most values to zero; percentile and MSE clip the tail for a grid tens of times finer. Which rule
serves a method is chosen on the validation split (``scripts/choose_range_rule.py``).
"""
from __future__ import annotations

import torch

RULES = ("absmax", "percentile", "mse")
PERCENTILE = 99.99
CANDIDATES = 100
#: each fixed-grid method's rule when none is given, chosen on the validation split (scripts/choose_range_rule.py),
#: and the rule that sets PACT's learned α₀ (scripts/sweep_pact_alpha.py)
DEFAULT = {"dorefa": "percentile", "adaround": "percentile", "pact": "mse"}
#: a larger sample is subsampled for the percentile (torch.quantile's limit, and speed); the max is kept
SAMPLE = 1 << 20


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"unknown range rule {rule!r}: use one of {', '.join(RULES)}")
    return rule


@torch.no_grad()
def clip_value(x: torch.Tensor, rule: str, lo: int, hi: int) -> torch.Tensor:
    """The range c of a grid with codes lo … hi (step c / hi) for the sample ``x``, by ``rule``."""
    a = x.detach().abs().flatten().float()
    top = a.max().clamp_min(torch.finfo(torch.float32).eps)
    if check_rule(rule) == "absmax":
        return top
    if rule == "percentile":
        if len(a) > SAMPLE:
            a = a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))[:SAMPLE].to(a.device)]
        return torch.quantile(a, PERCENTILE / 100).clamp_min(top * 1e-3)
    return clip_values(x.detach().flatten()[None], rule, lo, hi, axis=0)[0]


@torch.no_grad()
def clip_values(x: torch.Tensor, rule: str, lo: int, hi: int, axis: int) -> torch.Tensor:
    """Per channel along ``axis`` (e.g. a weight's output rows): the range c of each channel by ``rule``, as
    :func:`clip_value` would give for that channel alone (the MSE search runs on all channels at once)."""
    rows = x.detach().float().movedim(axis, 0).flatten(1)
    top = rows.abs().amax(1).clamp_min(torch.finfo(torch.float32).eps)
    if check_rule(rule) == "absmax":
        return top
    if rule == "percentile":
        return torch.stack([clip_value(r, rule, lo, hi) for r in rows])
    best, best_err = top.clone(), torch.full_like(top, float("inf"))
    for k in range(1, CANDIDATES + 1):
        c = top * k / CANDIDATES
        s = (c / hi)[:, None]
        err = (torch.clamp(torch.round(rows / s), lo, hi) * s - rows).pow(2).mean(1)
        better = err < best_err
        best, best_err = torch.where(better, c, best), torch.where(better, err, best_err)
    return best
