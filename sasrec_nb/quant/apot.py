"""APoT: additive powers-of-two quantization (Li, Dong & Wang, ICLR 2020, arXiv 1909.13144).

Levels (§2.2): with base bit-width k = 2 and b = k·n,

    Q^a(α, b) = α · γ · {Σ_{i=0}^{n−1} p_i},   p_i ∈ {0, 2^−i, 2^−(i+n), 2^−(i+2n)}

and γ normalises the largest sum to 1. :func:`apot_levels` reproduces the official builder
(yhhhli/APoT_Quantization, ``build_power_value``) for B = 2..6: the formula for even B and the
official uneven splits for B = 3 and 5 (table :data:`ODD_TERMS`). Project extension (the official code
gives NaN above 6 bits): B = 7 and 8 follow the formula with n = ⌈B/2⌉ terms, the last one 1 bit
({0, 2^−(i+1)}) when B is odd, giving 128 and 256 distinct levels; B = 1 is {0, 1}. APoT is meant
for 2–5 bits: at 8 bits its gain is shift-add hardware, not accuracy (its widest gap, 1/16 of α at
B = 8 and 1/15 at B = 7, is the step of a 4-bit uniform grid).

Forward (§2.3), u = clip(x/α, −1, 1) (signed) or clip(x/α, 0, 1) (unsigned):

    x̂ = α · sign(u) · Π(|u|),   Π = nearest level, straight-through in the backward pass

so the straight-through gradients (one autograd node, ``_APoTRound``) are RCF's ∂x̂/∂α = sign(x) where
|x/α| ≥ 1 and Π(u) − u inside, and ∂x̂/∂x = 1 inside, 0 outside (the ImageNet code). Π finds the nearest
level by counting the midpoints of the sorted levels below |u| (ties go to the level nearer zero), through
:class:`MidpointBins`, a uniform bin table that gives the count in O(1) per element; the official argmin
over a hash-ordered level list builds an N × L matrix and breaks ties by that order.

Weights are signed: sign + (b−1)-bit magnitude, ±apot_levels(b−1), so 2b−1 levels (15 at 4 bits). A
2-bit weight is the uniform ternary {−α, 0, α}, as in the official code: not APoT. Weight
normalisation (§2.4): ŵ = (w − μ)/σ with differentiable μ, σ (the ImageNet code), per output row
when ``axis`` is given (α, μ, σ per row), per tensor otherwise (the paper). SASRec adaptation: the
official conv is followed by BatchNorm and uses α·Π(ŵ/α) as is; a SASRec Linear has no BatchNorm, so
the scale and shift are re-applied, ŵ_q = σ · α · Π(ŵ/α) + μ, keeping the layer's function.

α₀ (choices):

* weights up to 6 bits: 3.0, i.e. 3σ (the official default);
* weights at 7–8 bits: max|ŵ| per row, no clipping. On Gaussian rows of 32–128 and a 16k tensor the
  8-bit quantization MSE is 1.5–2.5× lower than with 3.0 (1.25–1.5× at 7 bits);
* activations (and weights with ``apot_normalize=False``): max|x| of the calibration sample; the
  official code uses a constant 6 (ImageNet) or 8 (CIFAR).

Activations are unsigned with B = bits (put them after ReLU). The signed variant for SASRec's
LayerNorm outputs and embeddings is a project variant: the weight grid without normalisation. The
optional LSQ-style gradient scale on α (official default: none) is left out; under Adam it has almost
no effect (qat_methods.md §0).

Export: uint8 codes into the sorted signed (or unsigned) level table, at most 255 (256) entries up to
8 bits, scale α·σ per channel and offset μ, so ``scale · table[code] + offset`` equals the forward.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from .core import EPS, Exported, Quantizer, broadcast, other_dims, reduce_except

#: the official uneven splits: exponents e of each term's non-zero options 2^−e (every term also has 0)
ODD_TERMS = {3: ((1, 2, 4), (3,)), 5: ((1, 3, 6), (2, 4, 7), (5,))}
#: above this many bits a weight's α₀ is max|ŵ| instead of the official 3.0
OFFICIAL_MAX_BITS = 6


def apot_terms(B: int) -> tuple[tuple[int, ...], ...]:
    """Exponents of each term's non-zero options: the official splits, else the paper formula."""
    if B in ODD_TERMS:
        return ODD_TERMS[B]
    n = math.ceil(B / 2)
    return tuple((i + 1,) if 2 * i + 1 == B else tuple(i + j * n + 1 for j in range(3)) for i in range(n))


def levels_from_terms(terms: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Every sum of one option per term, each term offering 0 or 2^−e for its exponents e, sorted and normalised so
    that the largest is 1 (the paper's γ): the APoT level set of those terms."""
    options = [(0.0, *(2.0**-e for e in term)) for term in terms]
    sums = torch.tensor(sorted({sum(c) for c in itertools.product(*options)}), dtype=torch.float64)
    return (sums / sums[-1]).float()


def apot_levels(B: int) -> torch.Tensor:
    """Sorted normalised APoT magnitudes in [0, 1] (max 1): 2, 4, 8, 16, 32, 64, 128, 256 for B = 1..8."""
    if not 1 <= B <= 8:
        raise ValueError(f"APoT levels are defined for 1 to 8 bits, got {B!r}")
    return levels_from_terms(apot_terms(B))


class MidpointBins(nn.Module):
    """The level nearest to a ∈ [0, 1] among sorted ``levels`` (ties to the lower level), in O(1) per element:
    what ``torch.bucketize`` over the midpoints gives, without its binary search (about 25× slower than one
    multiply on this CPU, and called on every activation).

    [0, 1) is cut into K = 2^k equal bins, K the smallest power of two putting at most one midpoint in each;
    a power of two keeps ⌊a·K⌋ and the bin edges exact in floating point. With b = ⌊a·K⌋, ``inside[b]`` the
    midpoint within bin b (+∞ where there is none), ``below[b]`` the midpoints under its lower edge:

        count(a)   = below[b] + (a > inside[b])                              the level's index (export)
        nearest(a) = hi[b] if a > inside[b] else lo[b]                       the level itself (forward)

    with lo[b] = levels[below[b]] and hi[b] = the next level. ``nearest`` reads three small tables with
    ``index_select`` and 32-bit bin numbers (2-3× faster than indexing with int64 codes and then the levels).
    """

    def __init__(self, levels: torch.Tensor):
        super().__init__()
        midpoints = (levels[1:] + levels[:-1]) / 2
        self.size = midpoints.numel()
        k = 1
        while torch.bincount((midpoints * k).long()).max() > 1:
            k *= 2
        inside = torch.full((k + 1,), math.inf)  # bin k holds a = 1 alone
        inside[(midpoints * k).long()] = midpoints
        below = torch.searchsorted(midpoints, torch.arange(k + 1) / k)
        self.register_buffer("below", below, persistent=False)
        self.register_buffer("inside", inside, persistent=False)
        self.register_buffer("lo", levels[below], persistent=False)
        self.register_buffer("hi", levels[(below + 1).clamp(max=self.size)], persistent=False)

    def bin_of(self, a: torch.Tensor) -> torch.Tensor:
        return (a * (self.inside.numel() - 1)).int().clamp_(0, self.inside.numel() - 1).view(-1)

    def count_below(self, a: torch.Tensor) -> torch.Tensor:
        b = self.bin_of(a)
        return (self.below.index_select(0, b) + (a.reshape(-1) > self.inside.index_select(0, b))).view(a.shape)

    def nearest(self, a: torch.Tensor) -> torch.Tensor:
        b = self.bin_of(a)
        above = a.reshape(-1) > self.inside.index_select(0, b)
        return torch.where(above, self.hi.index_select(0, b), self.lo.index_select(0, b)).view(a.shape)


class _APoTRound(torch.autograd.Function):
    """x̂ = α · Π(clip(x/α)) with the straight-through gradients of the module docstring, in one node.

    Written out, ``α · (Π(u).detach() + u − u.detach())`` costs autograd several more passes over
    the tensor forward and backward; on the quick profile's eighteen activation quantizers that made an
    APoT training step 2.4× an FP32 one. Here the forward saves u and Π(u) and the backward is

        ∂x̂/∂x = 1[u inside],    ∂x̂/∂α = Π(u) − u · 1[u inside]      (inside: |u| ≤ 1, or 0 ≤ u ≤ 1)

    which is what autograd derives from the written-out form (tested equal).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, quantizer: APoTQuantizer) -> torch.Tensor:
        u = x / alpha
        level = quantizer.nearest(u)  # saturates beyond ±1: the clip is inside Π
        ctx.save_for_backward(u, level, alpha)
        ctx.signed = quantizer.signed
        return level * alpha

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, level, alpha = ctx.saved_tensors
        inside = u.abs() <= 1 if ctx.signed else (u >= 0) & (u <= 1)
        grad_x = torch.where(inside, grad, 0.0)
        grad_alpha = (grad * torch.where(inside, level - u, level)).sum_to_size(alpha.shape)
        return grad_x, grad_alpha, None


class APoTQuantizer(Quantizer):
    method = "apot"
    supported_bits = (2, 8)

    def __init__(self, bits: int, signed: bool = True, axis: int | None = None, channels: int | None = None,
                 normalize: bool = False):
        super().__init__(bits, signed, axis, channels)
        self.normalize = normalize
        magnitudes = apot_levels(bits - 1 if signed else bits)
        table = torch.cat([-magnitudes.flip(0)[:-1], magnitudes]) if signed else magnitudes
        self.register_buffer("table", table, persistent=False)
        self.bins = MidpointBins(magnitudes)
        self.alpha = nn.Parameter(torch.ones(self.param_shape()))
        if normalize:
            self.register_buffer("mean", torch.zeros(self.param_shape()))
            self.register_buffer("std", torch.ones(self.param_shape()))

    @property
    def scale(self) -> torch.Tensor:
        return self.alpha.detach().clamp_min(EPS)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable μ and σ per channel (per tensor when axis is None), shaped to broadcast on x."""
        dims = other_dims(x, self.axis)
        mu, sigma = x.mean(dims, keepdim=True), x.std(dims, keepdim=True).clamp_min(EPS)
        self.mean.copy_(mu.detach().reshape(self.mean.shape))
        self.std.copy_(sigma.detach().reshape(self.std.shape))
        return mu, sigma

    def unit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """u = clip(ŵ/α) and the (scale, offset) that map the unit grid back: x̂ = scale · Π(u) + offset."""
        alpha = broadcast(self.alpha.clamp_min(EPS), x, self.axis)
        lo = -1.0 if self.signed else 0.0
        if not self.normalize:
            return torch.clamp(x / alpha, lo, 1.0), alpha, None
        mu, sigma = self.moments(x)
        return torch.clamp((x - mu) / sigma / alpha, lo, 1.0), alpha * sigma, mu

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """Index into ``table`` of the level nearest to u (the magnitude is projected; ties toward zero)."""
        idx = self.bins.count_below(u.abs())
        if not self.signed:
            return idx
        zero = self.bins.size
        return torch.where(u < 0, zero - idx, zero + idx)

    def init_from(self, x: torch.Tensor) -> None:
        if self.normalize:
            mu, sigma = self.moments(x)
            if self.bits <= OFFICIAL_MAX_BITS:
                self.alpha.data.fill_(3.0)
                return
            x = (x - mu) / sigma
        self.alpha.data.copy_(reduce_except(x, self.axis).clamp_min(EPS))

    def nearest(self, u: torch.Tensor) -> torch.Tensor:
        """Π(u): the nearest level itself, ``table[project(u)]`` without building signed indices.

        Saturates: |u| > 1 gives ±1 (the last bin's level) and, unsigned, u < 0 gives 0 (the first bin's).
        """
        if not self.signed:
            return self.bins.nearest(u)
        return torch.copysign(self.bins.nearest(u.abs()), u)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        alpha = broadcast(self.alpha.clamp_min(EPS), x, self.axis)
        if not self.normalize:
            return _APoTRound.apply(x, alpha, self)
        mu, sigma = self.moments(x)
        return sigma * _APoTRound.apply((x - mu) / sigma, alpha, self) + mu

    def levels(self) -> torch.Tensor:
        lv = self.scale.unsqueeze(-1) * self.table
        return self.std.unsqueeze(-1) * lv + self.mean.unsqueeze(-1) if self.normalize else lv

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        u, scale, offset = self.unit(x)
        shape = self.param_shape()
        return Exported(self.project(u).to(torch.uint8), scale.reshape(shape), self.axis, self.table.clone(),
                        None if offset is None else offset.reshape(shape))


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None,
                     apot_normalize: bool = True) -> APoTQuantizer:
    return APoTQuantizer(bits, signed=True, axis=axis, channels=channels, normalize=apot_normalize)


def act_quantizer(bits: int, signed: bool = True) -> APoTQuantizer:
    return APoTQuantizer(bits, signed=signed)


def pot_levels(B: int) -> torch.Tensor:
    """Plain powers of two on [0, 1] with B bits: {0, 2^−(2^B−2), …, 2^−1, 1} (the paper's PoT baseline)."""
    return torch.tensor(sorted([0.0] + [2.0**-i for i in range(2**B - 1)]))


def uniform_levels(B: int) -> torch.Tensor:
    """The uniform grid on [0, 1] with 2^B levels."""
    return torch.arange(2**B, dtype=torch.float32) / (2**B - 1)


def projection_error(x: torch.Tensor, magnitudes: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Mean squared error of sign(x)·α·Π(clip(|x|/α, 0, 1)) for each α (the paper's Fig. 2 argument):
    PoT is fine near 0 and coarse near α, uniform the opposite, APoT in between."""
    mids = (magnitudes[1:] + magnitudes[:-1]) / 2
    errors = []
    for a in alphas.tolist():
        u = torch.clamp(x.abs() / a, 0, 1)
        errors.append(((torch.sign(x) * a * magnitudes[torch.bucketize(u, mids)] - x) ** 2).mean())
    return torch.stack(errors)
