"""AdaRound's rounding variable and grids (Nagel et al., ICML 2020, arXiv 2004.10568); the procedure that
learns the rounding layer by layer is :mod:`sasrec_nb.quant.adaround`, whose docstring states the method.

    W̃ = s · clip(⌊W/s⌋ + h(V), q_min, q_max)                              soft-quantized weight
    h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1),  ζ = 1.1, γ = −0.1                  rectified sigmoid
    f_reg(V) = Σ 1 − |2h(V) − 1|^β                                          regulariser
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import ranges
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


def rounding_regularizer(v: torch.Tensor, beta: float) -> torch.Tensor:
    """f_reg(V) = Σ (1 − |2h(V) − 1|^β): 1 at h = ½, 0 at h ∈ {0, 1}; a large β flattens it away from ½."""
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()


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
        """f_reg of this quantizer's V (:func:`rounding_regularizer`)."""
        return rounding_regularizer(self.v, beta)

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
    """Activations: a uniform grid calibrated once by ``range_rule`` (:mod:`.ranges`) and frozen (AdaRound learns
    rounding only)."""

    method = "adaround"

    def __init__(self, bits: int, signed: bool = True, range_rule: str = ranges.DEFAULT["adaround"],
                 axis: int | None = None, channels: int | None = None):
        super().__init__(bits, signed=signed, axis=axis, channels=channels)
        self.range_rule = ranges.check_rule(range_rule)
        self.step.requires_grad_(False)

    def init_from(self, x: torch.Tensor) -> None:
        lo, hi = self.qrange
        c = ranges.clip_value(x, self.range_rule, lo, hi) if self.axis is None else \
            ranges.clip_values(x, self.range_rule, lo, hi, axis=self.axis)
        self.step.data.copy_(c / hi)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, range_rule={self.range_rule}"


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None,
                     adaround_grid: str = "mse") -> AdaRoundQuantizer:
    return AdaRoundQuantizer(bits, axis=axis, channels=channels, grid=adaround_grid)


def act_quantizer(bits: int, signed: bool = True, axis: int | None = None, channels: int | None = None,
                  act_range_rule: str = ranges.DEFAULT["adaround"]) -> FixedQuantizer:
    return FixedQuantizer(bits, signed=signed, range_rule=act_range_rule, axis=axis, channels=channels)


def beta_schedule(t: int, iters: int, warmup: float = 0.2, start: float = 20, end: float = 2,
                  kind: str = "cosine") -> float:
    """β at iteration t: ``start`` during warm-up, then cosine (AIMET) or linear (BRECQ) decay to ``end``."""
    progress = max(0.0, (t - warmup * iters) / ((1 - warmup) * iters))
    if kind == "cosine":
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return end + (start - end) * max(0.0, 1 - progress)
    raise ValueError(f"kind must be 'cosine' or 'linear', got {kind!r}")
