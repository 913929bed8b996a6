"""PACT: parameterized clipping activation (Choi et al. 2018, arXiv 1805.06085).

One learnable clipping level α per activation quantizer:

    y   = clip(x, 0, α) = ½ (|x| − |x − α| + α)
    y_q = round(y · (2^k − 1) / α) · α / (2^k − 1)
    ∂y_q/∂x = 1 for 0 ≤ x ≤ α, else 0          (STE through round)
    ∂y_q/∂α = 1 for x ≥ α, else 0              (no rounding-residual term, unlike LSQ)

α's gradient is the upstream gradient summed over the clipped elements only; at x = α both x and α
receive it (IBM's PACT_STE, the KwangHoonAn port). The rule is a custom autograd Function: plain
autograd through a round-STE would add LSQ's residual term (qat_methods.md §3: dα 2.0 vs 1.966667).
α carries an L2 penalty λ_α: ``param_weight_decay``, default 1e-4 (option ``pact_alpha_decay``),
which :func:`sasrec_nb.quant.param_groups` turns into its group's Adam weight decay.

Choices where the paper does not fit SASRec, named here and in notebook 05:

* **α₀.** The paper starts α large and lets the clipped gradient and λ_α shrink it. QAT here starts
  from a trained FP32 model, so α₀ = max|x| of the calibration sample: nothing is clipped at the
  start. ``pact_alpha_init`` forces a constant instead (10 in the KwangHoonAn port, 8 in Distiller).
* **Signed variant** for the signed inputs (LayerNorm outputs, residual branches): a symmetric
  two-sided PACT, y = clip(x, −α, α) on a symmetric grid of 2^(k−1) − 1 steps per side, with
  ∂y_q/∂α = sign(x) where |x| ≥ α. IBM's PACT2 is two-sided with separate learnable bounds; this is
  its symmetric special case. Unsigned PACT goes only after ReLU (the FFN's fc2 input).
* **Weights.** PACT does not quantize weights itself; the paper (and Distiller's PACTQuantizer) use
  DoReFa, so :func:`weight_quantizer` returns :class:`~sasrec_nb.quant.dorefa.DoReFaWeightQuantizer`
  with its options (``dorefa_rescale``).
"""
from __future__ import annotations

import torch
from torch import nn

from . import dorefa
from .core import EPS, Exported, Quantizer, narrow_range, reduce_except


class PACTFunction(torch.autograd.Function):
    """Clip to [lo, α] and round to ``steps`` per α; backward is PACT's rule, not autograd's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, steps: int, signed: bool) -> torch.Tensor:
        lo = -alpha if signed else torch.zeros_like(alpha)
        ctx.save_for_backward(x, alpha)
        ctx.signed = signed
        step = alpha / steps
        return torch.round(torch.clamp(x, lo, alpha) / step) * step

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, alpha = ctx.saved_tensors
        lo = -alpha if ctx.signed else torch.zeros_like(alpha)
        grad_x = torch.where((x >= lo) & (x <= alpha), grad, 0.0)
        grad_alpha = torch.where(x >= alpha, grad, 0.0).sum()
        if ctx.signed:
            grad_alpha = grad_alpha - torch.where(x <= -alpha, grad, 0.0).sum()
        return grad_x, grad_alpha.reshape(alpha.shape), None, None


class PACTQuantizer(Quantizer):
    """PACT on [0, α] (unsigned) or its symmetric variant on [−α, α] (signed); α is a parameter."""

    method = "pact"
    param_weight_decay = 1e-4

    def __init__(self, bits: int, signed: bool = True, alpha_init: float | None = None, alpha_decay: float = 1e-4):
        super().__init__(bits, signed)
        self.alpha = nn.Parameter(torch.ones(()))
        self.alpha_init = alpha_init
        self.param_weight_decay = alpha_decay

    @property
    def qrange(self) -> tuple[int, int]:
        """Codes: 0 … 2^k − 1 (unsigned), −(2^(k−1) − 1) … 2^(k−1) − 1 (signed, symmetric)."""
        return narrow_range(self.bits, self.signed)

    def init_from(self, x: torch.Tensor) -> None:
        if self.alpha_init is not None:
            self.alpha.data.fill_(self.alpha_init)
        else:
            self.alpha.data.copy_(reduce_except(x, None).clamp_min(EPS))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return PACTFunction.apply(x, self.alpha.clamp_min(EPS), self.qrange[1], self.signed)

    @property
    def scale(self) -> torch.Tensor:
        return self.alpha.detach().clamp_min(EPS)

    def levels(self) -> torch.Tensor:
        lo, n = self.qrange
        return self.scale / n * torch.arange(lo, n + 1, dtype=torch.float32, device=self.alpha.device)

    @torch.no_grad()
    def export(self, x: torch.Tensor) -> Exported:
        n = self.qrange[1]
        alpha = self.scale
        floor = -alpha if self.signed else torch.zeros_like(alpha)
        codes = torch.round(torch.clamp(x, floor, alpha) / (alpha / n))
        return Exported(codes.to(dorefa.code_dtype(self.bits, self.signed)), alpha / n, None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_decay={self.param_weight_decay:g}"


def weight_quantizer(
    bits: int, axis: int | None = None, channels: int | None = None, dorefa_rescale: bool = True,
    dorefa_latent_start: bool = True
) -> dorefa.DoReFaWeightQuantizer:
    """PACT's weights are DoReFa's (the paper, and Distiller's PACTQuantizer)."""
    return dorefa.weight_quantizer(bits, axis=axis, channels=channels, dorefa_rescale=dorefa_rescale,
                                   dorefa_latent_start=dorefa_latent_start)


def act_quantizer(
    bits: int, signed: bool = True, pact_alpha_init: float | None = None, pact_alpha_decay: float = 1e-4
) -> PACTQuantizer:
    return PACTQuantizer(bits, signed=signed, alpha_init=pact_alpha_init, alpha_decay=pact_alpha_decay)
