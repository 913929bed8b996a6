"""DoReFa-Net (Zhou et al. 2016, arXiv 1606.06160): weights and activations.

The paper's quantizer and its two uses, as in the authors' tensorpack code (examples/DoReFa-Net):

    Q_k(r) = round((2^k − 1) · r) / (2^k − 1),   r ∈ [0, 1], identity gradient (STE)
    w_q = 2 · Q_k( tanh(w) / (2 · max|tanh(w)|) + ½ ) − 1                      k ≥ 2
    w_q = sign(w) · E(|w|),   E a stop-gradient, sign(0) = +1                    k = 1
    x_q = Q_k(clip(x, 0, 1))                                                      activations

For k ≥ 2 the weight grid is {−1, −1 + 2/(2^k − 1), …, 1}: 2^k levels and no zero level (a zero
weight maps to +1/(2^k − 1)). Backward: STE through Q_k only; autograd differentiates tanh *and*
the max (its gradient goes to the arg-max element, as tensorpack's reduce_max), so the weight
gradient equals that of the surrogate tanh(w) / max|tanh(w)|.

Adaptations for SASRec (qat_methods.md §0 and §4), each named where it is used:

* **Compensating scale** (``dorefa_rescale=True``, default). w_q ∈ [−1, 1] whatever the layer's
  weight magnitude; the CNNs of the paper hide this behind BatchNorm, SASRec's linears feed residual
  adds and would be inflated ~1/|w|. We multiply w_q by the least-squares scale of the latent
  weights, c = Σ w·w_q / Σ w_q² per channel (detached, recomputed on every forward), so that c·w_q is
  as close to w as the transform allows. (c = max|w| would inflate the small weights of a row by
  max|w| / tanh(max|w|), 1.7× for an item-table row reaching 1.5.) ``dorefa_rescale=False`` is the
  paper's w_q, to show the mismatch.
  k = 1 keeps the paper's E = mean|w| and ignores the option.
* **Latent start** (:meth:`DoReFaWeightQuantizer.latent_from`, used by ``quantize_model``). QAT here
  starts from a trained model, whose weights the transform would bend: c · tanh(w)/max|tanh(w)| squeezes
  each row's large weights (by 1.3-18 % relative error on the full-profile SASRec at 8 bits, against
  0.55-0.7 % for rounding alone). The latent weights are set to the transform's inverse, so that the
  model QAT starts from is the trained one up to rounding (``dorefa_latent_start=False``: latent = w).
  The paper trains from scratch and needs none.
* **Per-channel normalisation** when ``axis`` is given (one max|tanh(w)| and one c per output row,
  like every weight in this package); ``axis=None`` is the paper's per-tensor max.
* **Activation range.** The paper assumes inputs in [0, 1]; we quantize x / c with a fixed, not
  learned, c = max|x| of the calibration sample (``dorefa_act_range`` forces a constant; 1 is the
  paper): x̂ = c · Q_k(clip(x / c, 0, 1)), gradient 1 inside [0, c].
* **Signed variant** for LayerNorm outputs and residual branches: a symmetric uniform grid with
  2^(k−1) − 1 steps per side on [−c, c], x̂ = c · round(n · clip(x / c, −1, 1)) / n, which keeps an
  exact zero (the weights' offset grid would not). It is PACT's symmetric variant with α = c fixed.
"""
from __future__ import annotations

import torch

from . import ranges
from .core import EPS, Exported, Quantizer, broadcast, narrow_range, other_dims, reduce_except, round_ste


def quantize_k(r: torch.Tensor, bits: int) -> torch.Tensor:
    """Q_k(r) = round((2^k − 1) · r) / (2^k − 1) with a straight-through round."""
    n = 2**bits - 1
    return round_ste(r * n) / n


def amax_keepdim(t: torch.Tensor, axis: int | None) -> torch.Tensor:
    """max|t| over every dim but ``axis`` (kept for broadcasting), differentiable."""
    if axis is None:
        return t.abs().amax()
    return t.abs().amax(dim=[d for d in range(t.dim()) if d != axis], keepdim=True)


def code_dtype(bits: int, signed: bool) -> torch.dtype:
    if bits > 8:
        return torch.int32
    return torch.int8 if signed else torch.uint8


class DoReFaWeightQuantizer(Quantizer):
    """``c · w_q`` with the paper's w_q; c is the compensating scale (1 without rescale, E at k = 1)."""

    method = "dorefa"
    supported_bits = (1, 16)

    def __init__(self, bits: int, axis: int | None = None, channels: int | None = None, rescale: bool = True,
                 latent_start: bool = True):
        super().__init__(bits, signed=True, axis=axis, channels=channels)
        self.rescale, self.latent_start = rescale, latent_start
        self.register_buffer("magnitude", torch.ones(self.param_shape()))

    def magnitude_of(self, w: torch.Tensor) -> torch.Tensor:
        """c, detached: E = mean|w| at k = 1, else the least-squares Σ w·w_q / Σ w_q² (rescale) or 1 (the paper)."""
        if self.bits == 1:
            return reduce_except(w, self.axis, "mean").clamp_min(EPS)
        if not self.rescale:
            return torch.ones(self.param_shape(), device=w.device)
        with torch.no_grad():
            unit = 2 * quantize_k(self.normalise(w), self.bits) - 1
            dims = other_dims(w, self.axis)
            return ((w * unit).sum(dims) / (unit * unit).sum(dims)).clamp_min(EPS)

    def init_from(self, x: torch.Tensor) -> None:
        self.magnitude.copy_(self.magnitude_of(x))

    @torch.no_grad()
    def latent_from(self, w: torch.Tensor, iters: int = 60) -> torch.Tensor:
        """Latent weights v whose rescaled DoReFa transform is ``w`` before rounding (QAT from FP32).

        Per row (per tensor without ``axis``), with m = max|w| and u = w / m ∈ [−1, 1]: v = atanh(t·u)
        gives tanh(v) / max|tanh(v)| = u, and t ∈ (0, 1) is found by bisection so that the compensating
        scale Σ v·u / Σ u² equals m; then c · u = w. Without it the transform of the trained weights
        squeezes each row's large weights (pitfall 3 of the method card) and QAT starts from a different
        model. Identity at k = 1, without ``rescale`` (the paper's w_q cannot keep the layer's scale) and with
        ``dorefa_latent_start=False`` (the paper's start: latent = trained weights).
        """
        if self.bits == 1 or not self.rescale or not self.latent_start:
            return w
        w64 = w.double()
        m = amax_keepdim(w64, self.axis).clamp_min(EPS)
        u = w64 / m
        dims = other_dims(w, self.axis)
        target = m * (u * u).sum(dims, keepdim=True)
        lo, hi = torch.zeros_like(m), torch.full_like(m, 1 - 1e-12)
        for _ in range(iters):
            t = (lo + hi) / 2
            short = (torch.atanh(t * u) * u).sum(dims, keepdim=True) < target
            lo, hi = torch.where(short, t, lo), torch.where(short, hi, t)
        return torch.atanh(hi * u).to(w.dtype)

    def normalise(self, w: torch.Tensor) -> torch.Tensor:
        """tanh(w) / (2 · max|tanh(w)|) + ½ ∈ [0, 1], with gradient through tanh and the max."""
        t = torch.tanh(w)
        return t / (2 * amax_keepdim(t, self.axis).clamp_min(EPS)) + 0.5

    @torch.no_grad()
    def clipped_fraction(self, x: torch.Tensor) -> float:
        """Share of weights outside the grid's range, measured where DoReFa quantizes: the tanh-normalised
        values, which lie in [0, 1] by construction. DoReFa never clips a weight (0.0); the base class's test
        against the level values would count the latent weights beyond c as clipped, though they are not."""
        u = self.normalise(x)
        return ((u < 0) | (u > 1)).float().mean().item()

    @torch.no_grad()
    def unrounded(self, w: torch.Tensor) -> torch.Tensor:
        """c · (2·tanh-normalised − 1): the weights as the grid sees them, before rounding (for pictures:
        the latent weights themselves live in another space)."""
        if self.bits == 1:
            return w
        return (2 * self.normalise(w) - 1) * broadcast(self.magnitude_of(w), w, self.axis)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        c = self.magnitude_of(x)
        self.magnitude.copy_(c)
        c = broadcast(c, x, self.axis)
        if self.bits == 1:
            r = x / c
            return (r + (torch.where(r >= 0, 1.0, -1.0) - r).detach()) * c
        return (2 * quantize_k(self.normalise(x), self.bits) - 1) * c

    def table(self) -> torch.Tensor:
        """The unit levels 2j / (2^k − 1) − 1, j = 0 … 2^k − 1."""
        n = 2**self.bits - 1
        return 2 * torch.arange(n + 1, dtype=torch.float32, device=self.magnitude.device) / n - 1

    @property
    def scale(self) -> torch.Tensor:
        return self.magnitude.clone()

    def levels(self) -> torch.Tensor:
        return self.scale.unsqueeze(-1) * self.table()

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        if self.bits == 1:
            codes = (x >= 0).to(torch.uint8)
        else:
            codes = torch.round(self.normalise(x) * (2**self.bits - 1)).to(code_dtype(self.bits, False))
        return Exported(codes, self.magnitude_of(x), self.axis, levels=self.table().to(x.device))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rescale={self.rescale}"


class DoReFaActQuantizer(Quantizer):
    """``c · Q(clip(x / c, lo, 1))`` with a fixed range c: lo = 0 (the paper) or −1 (signed variant).

    c is ``fixed_range`` when given, else set from the calibration sample by ``range_rule`` (:mod:`.ranges`)."""

    method = "dorefa"

    def __init__(self, bits: int, signed: bool = True, fixed_range: float | None = None,
                 range_rule: str = ranges.DEFAULT["dorefa"]):
        super().__init__(bits, signed)
        self.fixed_range = fixed_range
        self.range_rule = ranges.check_rule(range_rule)
        self.register_buffer("bound", torch.ones(()))

    @property
    def qrange(self) -> tuple[int, int]:
        """Codes: 0 … 2^k − 1 (unsigned), −(2^(k−1) − 1) … 2^(k−1) − 1 (signed, symmetric)."""
        return narrow_range(self.bits, self.signed)

    def init_from(self, x: torch.Tensor) -> None:
        if self.fixed_range is not None:
            self.bound.fill_(self.fixed_range)
        else:
            self.bound.copy_(ranges.clip_value(x, self.range_rule, *self.qrange))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, n = self.qrange
        return self.bound * (round_ste(torch.clamp(x / self.bound, lo / n, 1.0) * n) / n)

    @property
    def scale(self) -> torch.Tensor:
        return self.bound.clone()

    def levels(self) -> torch.Tensor:
        lo, n = self.qrange
        return self.bound / n * torch.arange(lo, n + 1, dtype=torch.float32, device=self.bound.device)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        lo, n = self.qrange
        codes = torch.round(torch.clamp(x / self.bound, lo / n, 1.0) * n)
        return Exported(codes.to(code_dtype(self.bits, self.signed)), self.bound / n, None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fixed_range={self.fixed_range}, range_rule={self.range_rule}"


def weight_quantizer(
    bits: int, axis: int | None = None, channels: int | None = None, dorefa_rescale: bool = True,
    dorefa_latent_start: bool = True
) -> DoReFaWeightQuantizer:
    return DoReFaWeightQuantizer(bits, axis=axis, channels=channels, rescale=dorefa_rescale,
                                 latent_start=dorefa_latent_start)


def act_quantizer(bits: int, signed: bool = True, dorefa_act_range: float | None = None,
                  act_range_rule: str = ranges.DEFAULT["dorefa"]) -> DoReFaActQuantizer:
    return DoReFaActQuantizer(bits, signed=signed, fixed_range=dorefa_act_range, range_rule=act_range_rule)
