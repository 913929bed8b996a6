"""AdaRound: adaptive rounding for post-training quantization (Nagel et al., ICML 2020, arXiv 2004.10568).

The FP weights W and the grid s stay frozen; only a rounding variable V per weight is learned:

    W̃ = s · clip(⌊W/s⌋ + h(V), q_min, q_max)                              soft-quantized weight
    h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1),  ζ = 1.1, γ = −0.1                  rectified sigmoid
    f_reg(V) = Σ 1 − |2h(V) − 1|^β                                          regulariser
    argmin_V ‖f_a(W x) − f_a(W̃ x̃)‖² + λ f_reg(V)                          asymmetric objective

(the paper's eqs. 21-25; numbering quoted from memory, formulas checked against AIMET and BRECQ).

x̃ is the input the already-quantized earlier layers produce ("asymmetric reconstruction"),
f_a the activation after the layer (ReLU for fc1). V₀ = −log((ζ − γ)/(frac(W/s) − γ) − 1), so
h(V₀) = frac(W/s) and hard rounding at init is round-to-nearest. The regulariser is off for the first
20 % of iterations, then β anneals 20 → 2 (AIMET: cosine, BRECQ: linear). After a layer, rounding is
hard: h = 1[V ≥ 0]. Defaults follow AIMET/BRECQ: λ = 0.01, batch 32, Adam 1e-3 on V, 10k iterations.

Choices of this port, stated in notebook 08:

* grid: symmetric, per output channel, from BRECQ's search over 80 shrinking candidates
  s = (1 − 0.01k)·max|w|/q_max minimising the L_p error with p = 2.4 (``adaround_grid="mse"``),
  or the abs-max grid (``"max"``);
* activations: 8-bit abs-max quantizers calibrated on FP activations and never trained, so that
  rounding is the only variable;
* SASRec's item table is a lookup and the scoring head. As a lookup its layer objective is
  Σ(W − W̃)², minimised by round-to-nearest (qat_methods.md §6, pitfall 2), so it is rounded for its
  head role, reconstructing the scores h·Tᵀ of the final hidden states after all blocks; the lookup
  uses the same rounding. The position table is only a lookup: it is rounded to nearest.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .core import UniformQuantizer, broadcast, reduce_except
from .ste import STEQuantizer

ZETA, GAMMA = 1.1, -0.1
#: BRECQ's grid search: candidates and the L_p norm it minimises
GRID_CANDIDATES, GRID_P = 80, 2.4
ROUNDING = ("soft", "hard", "nearest")
#: rows of final hidden states per step when reconstructing the scores; rows for the reported errors
HEAD_ROWS, EVAL_ROWS = 256, 4096
#: sequences per forward pass while capturing layer inputs
CHUNK = 256


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def mse_step(x: torch.Tensor, axis: int | None, lo: int, hi: int, p: float = GRID_P) -> torch.Tensor:
    """Per-channel step (1 − 0.01k)·max|x|/q_max, k < 80, with the smallest mean |x − x̂|^p (BRECQ)."""
    amax = reduce_except(x, axis).clamp_min(1e-8)
    best, best_err = amax / hi, torch.full_like(amax, math.inf)
    for k in range(GRID_CANDIDATES):
        s = amax * (1 - 0.01 * k) / hi
        sb = broadcast(s, x, axis)
        err = reduce_except((torch.clamp(torch.round(x / sb), lo, hi) * sb - x).abs().pow(p), axis, "mean")
        best = torch.where(err < best_err, s, best)
        best_err = torch.minimum(err, best_err)
    return best


class AdaRoundQuantizer(UniformQuantizer):
    """A frozen symmetric grid s and a learned rounding V for the one weight it was initialised with.

    ``rounding`` selects the forward: "soft" (⌊W/s⌋ + h(V), differentiable in V, used while
    optimising), "hard" (⌊W/s⌋ + 1[V ≥ 0], after optimisation, in eval and export; at init it is
    round-to-nearest, except that a tie frac = ½ goes up where torch.round goes to even) or "nearest"
    (round(W/s), for comparison). W itself receives no gradient; export is always the hard rounding.
    """

    method = "adaround"

    def __init__(self, bits: int, axis: int | None = None, channels: int | None = None, grid: str = "mse"):
        super().__init__(bits, signed=True, axis=axis, channels=channels)
        if grid not in ("mse", "max"):
            raise ValueError(f"adaround_grid must be 'mse' or 'max', got {grid!r}")
        self.grid = grid
        self.step.requires_grad_(False)
        # V has the weight's shape, which (bits, axis, channels) does not give (the fan-in is missing):
        # init_from creates it from the weight. quantize_model calls init_from as soon as it builds the
        # quantizer, so an optimizer built afterwards holds V, and a saved state dict loads into it.
        self.v: nn.Parameter | None = None
        self._rounding = "hard"

    @property
    def rounding(self) -> str:
        return self._rounding

    @rounding.setter
    def rounding(self, mode: str) -> None:
        if mode not in ROUNDING:
            raise ValueError(f"rounding must be one of {ROUNDING}, got {mode!r}")
        self._rounding = mode

    def init_from(self, x: torch.Tensor) -> None:
        lo, hi = self.qrange
        step = mse_step(x, self.axis, lo, hi) if self.grid == "mse" else reduce_except(x, self.axis) / hi
        self.step.data.copy_(step.clamp_min(1e-8))
        self.init_rounding(x)

    @torch.no_grad()
    def init_rounding(self, x: torch.Tensor) -> None:
        """V₀ = −log((ζ − γ)/(frac(W/s) − γ) − 1) on the current grid, so that h(V₀) = frac(W/s)."""
        w = x.detach() / broadcast(self.scale, x, self.axis)
        v0 = -torch.log((ZETA - GAMMA) / (w - torch.floor(w) - GAMMA) - 1)
        if self.v is not None and self.v.shape == v0.shape:
            self.v.data.copy_(v0)
        else:
            self.v = nn.Parameter(v0)

    def h(self) -> torch.Tensor:
        return rectified_sigmoid(self.v)

    def regularizer(self, beta: float) -> torch.Tensor:
        """f_reg = Σ (1 − |2h(V) − 1|^β): 1 at h = ½, 0 at h ∈ {0, 1}."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def _check(self, x: torch.Tensor) -> None:
        if self.v is None:
            raise RuntimeError("AdaRoundQuantizer has no rounding variable yet: call init_from(weight) first")
        if x.shape != self.v.shape:
            raise ValueError(f"AdaRoundQuantizer rounds only the weight it was initialised with, of shape "
                             f"{tuple(self.v.shape)}; got {tuple(x.shape)}")

    def nearest_codes(self, x: torch.Tensor) -> torch.Tensor:
        return super().codes(x)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of the hard rounding (of round-to-nearest in "nearest" mode)."""
        self._check(x)
        if self.rounding == "nearest":
            return self.nearest_codes(x)
        lo, hi = self.qrange
        floor = torch.floor(x.detach() / broadcast(self.scale, x, self.axis))
        return torch.clamp(floor + (self.v.detach() >= 0).to(x.dtype), lo, hi)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        s = broadcast(self.scale, x, self.axis)
        if self.rounding != "soft":
            return s * self.codes(x)
        self._check(x)
        lo, hi = self.qrange
        return s * torch.clamp(torch.floor(x.detach() / s) + self.h(), lo, hi)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}, rounding={self.rounding}"


class FixedQuantizer(STEQuantizer):
    """Activations: abs-max calibrated uniform grid, frozen (AdaRound learns rounding only)."""

    method = "adaround"

    def __init__(self, bits: int, signed: bool = True):
        super().__init__(bits, signed=signed)
        self.step.requires_grad_(False)

    def _remember(self, x: torch.Tensor) -> None:
        """Keep each batch's max|x|: the base class's random subsample would miss the extremes."""
        self._seen.append(x.detach().abs().amax().view(1))


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None,
                     adaround_grid: str = "mse") -> AdaRoundQuantizer:
    return AdaRoundQuantizer(bits, axis=axis, channels=channels, grid=adaround_grid)


def act_quantizer(bits: int, signed: bool = True) -> FixedQuantizer:
    return FixedQuantizer(bits, signed=signed)


def beta_schedule(t: int, iters: int, warmup: float = 0.2, start: float = 20, end: float = 2,
                  kind: str = "cosine") -> float:
    """β at iteration t: ``start`` during warm-up, then cosine (AIMET) or linear (BRECQ) decay to ``end``."""
    progress = max(0.0, (t - warmup * iters) / ((1 - warmup) * iters))
    if kind == "cosine":
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return end + (start - end) * max(0.0, 1 - progress)
    raise ValueError(f"kind must be 'cosine' or 'linear', got {kind!r}")


# -- layer-wise reconstruction on SASRec ---------------------------------------------------------------


# the procedure lives in its own module; imported last because it uses the classes above
from .adaround_ptq import calibrate, from_state  # noqa: E402

__all__ = ["AdaRoundQuantizer", "FixedQuantizer", "act_quantizer", "beta_schedule", "calibrate", "from_state",
           "mse_step", "rectified_sigmoid", "weight_quantizer"]
