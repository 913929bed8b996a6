"""PACT: parameterized clipping activation (Choi et al. 2018, arXiv 1805.06085).

One learnable clipping level α per activation quantizer:

    y   = clip(x, 0, α) = ½ (|x| − |x − α| + α)
    y_q = round(y · (2^k − 1) / α) · α / (2^k − 1)
    ∂y_q/∂x = 1 for 0 ≤ x ≤ α, else 0          (STE through round)
    ∂y_q/∂α = 1 for x ≥ α, else 0              (no rounding-residual term, unlike LSQ)

α's gradient is the upstream gradient summed over the clipped elements only; at x = α both x and α
receive it (IBM's PACT_STE, the KwangHoonAn port). The rule is a custom autograd Function: plain
autograd through a round-STE would add LSQ's residual term (qat_methods.md §3: dα 2.0 vs 1.966667).
α is trained as the paper trains it: by SGD with momentum 0.9 and an L2 penalty λ_α (``pact_alpha_decay``,
default 1e-4), in an optimizer of its own (:func:`sasrec_nb.quant.param_groups`; the network keeps Adam).
Under Adam the update m/√v is the same whatever the gradient's size: while nothing is clipped the only
gradient is λ_α·α, and Adam would shrink α by a fixed fraction per step whatever λ_α is. Under SGD
the step is lr·(Σ clipped gradients + λ_α·α): the clipped gradient pushes α up, λ_α pulls it down, and the
balance is the one the paper describes. lr is ``pact_alpha_lr`` (default :data:`ALPHA_LR`).

Choices where the paper does not fit SASRec, named here and in notebook 05:

* **α₀.** The paper starts α large and lets the clipped gradient and λ_α shrink it. QAT here starts
  from a trained FP32 model, so α₀ is set from the calibration sample by a range rule (``pact_alpha_rule``,
  :mod:`.ranges`; default ``ranges.DEFAULT["pact"]``, the MSE-optimal clip, chosen on validation at 2, 4 and
  8 bits). ``pact_alpha_init`` forces a constant instead (10 in the KwangHoonAn port, 8 in Distiller).
  The abs-max start (nothing clipped) fails at 2 bits: a symmetric 2-bit grid {−α, 0, α} with α = max|x| rounds
  nearly every value to 0, whole rows of a LayerNorm input become 0, LayerNorm (ε = 1e-8) multiplies their
  gradient by up to 10⁴ per block, and the first backward pass already gives α gradients of 10⁹–10¹⁰: SGD throws α
  to zero or infinity at any rate (``results/sweeps/pact_alpha_start_quick.json``: validation NDCG@10 0 at
  lr 0.1, 1 and 30). The MSE start clips the tail instead, and its first gradients are of order 0.01–0.1.
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

from . import dorefa, ranges
from .core import EPS, Exported, Quantizer, narrow_range


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


#: SGD learning rate of α (momentum 0.9), chosen with the start on validation (``scripts/sweep_pact_alpha.py --act-bits 2
#: 4 8 --rule absmax mse --lr 0.1 1 30``, results/sweeps/pact_alpha_start_quick.json, quick profile, W8): α's
#: gradient is a *sum* over clipped values, so it grows with what the grid clips, and a 2-bit MSE grid clips far more
#: than an 8-bit one. At 4 and 8 bits every setting lies within 0.0015 of the others (one standard error ≈ 0.008);
#: at 2 bits the MSE start reaches 0.094 at lr 0.1, 0.055 at 1, and diverges at 30 (the rate an abs-max start needed
#: at 4 bits to move α at all). One rate serves every width: 0.1.
ALPHA_LR = 0.1


class PACTQuantizer(Quantizer):
    """PACT on [0, α] (unsigned) or its symmetric variant on [−α, α] (signed); α is a parameter."""

    method = "pact"
    param_weight_decay = 1e-4
    param_optimizer = "sgd"

    def __init__(self, bits: int, signed: bool = True, alpha_init: float | None = None, alpha_decay: float = 1e-4,
                 alpha_lr: float = ALPHA_LR, alpha_rule: str = ranges.DEFAULT["pact"]):
        super().__init__(bits, signed)
        self.alpha_rule = ranges.check_rule(alpha_rule)
        if alpha_decay < 0 or alpha_lr <= 0:
            raise ValueError(f"PACT needs pact_alpha_decay ≥ 0 and pact_alpha_lr > 0, got {alpha_decay}, {alpha_lr}")
        self.alpha = nn.Parameter(torch.ones(()))
        self.alpha_init = alpha_init
        self.param_weight_decay = alpha_decay
        self.param_lr = alpha_lr

    @property
    def qrange(self) -> tuple[int, int]:
        """Codes: 0 … 2^k − 1 (unsigned), −(2^(k−1) − 1) … 2^(k−1) − 1 (signed, symmetric)."""
        return narrow_range(self.bits, self.signed)

    def init_from(self, x: torch.Tensor) -> None:
        if self.alpha_init is not None:
            self.alpha.data.fill_(self.alpha_init)
        else:
            self.alpha.data.copy_(ranges.clip_value(x, self.alpha_rule, *self.qrange).clamp_min(EPS))

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
        return (f"{super().extra_repr()}, alpha: start {self.alpha_rule}, SGD lr {self.param_lr:g}, "
                f"L2 {self.param_weight_decay:g}")


def weight_quantizer(
    bits: int, axis: int | None = None, channels: int | None = None, dorefa_rescale: bool = True,
    dorefa_latent_start: bool = True
) -> dorefa.DoReFaWeightQuantizer:
    """PACT's weights are DoReFa's (the paper, and Distiller's PACTQuantizer)."""
    return dorefa.weight_quantizer(bits, axis=axis, channels=channels, dorefa_rescale=dorefa_rescale,
                                   dorefa_latent_start=dorefa_latent_start)


def act_quantizer(
    bits: int, signed: bool = True, pact_alpha_init: float | None = None, pact_alpha_decay: float = 1e-4,
    pact_alpha_lr: float = ALPHA_LR, pact_alpha_rule: str = ranges.DEFAULT["pact"]
) -> PACTQuantizer:
    return PACTQuantizer(bits, signed=signed, alpha_init=pact_alpha_init, alpha_decay=pact_alpha_decay,
                         alpha_lr=pact_alpha_lr, alpha_rule=pact_alpha_rule)
