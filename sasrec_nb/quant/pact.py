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


#: SGD learning rate of α (momentum 0.9). At W8A4 on the quick profile (``scripts/sweep_pact_alpha.py``,
#: results/sweeps/pact_alpha_quick.json) validation NDCG@10 cannot tell 0.1 to 300 apart (0.104-0.112, one standard
#: error ≈ 0.008); the rates differ in whether α reaches PACT's balance within QAT's 60 steps: at ≤ 10 α stays near
#: its calibrated max and nothing is clipped, at 30 it falls until clipping (about 0.2 %) holds it, at 300 it
#: oscillates. 30 is the rate at which the method does what the paper describes within the budget.
ALPHA_LR = 30.0


class PACTQuantizer(Quantizer):
    """PACT on [0, α] (unsigned) or its symmetric variant on [−α, α] (signed); α is a parameter."""

    method = "pact"
    param_weight_decay = 1e-4
    param_optimizer = "sgd"

    def __init__(self, bits: int, signed: bool = True, alpha_init: float | None = None, alpha_decay: float = 1e-4,
                 alpha_lr: float = ALPHA_LR):
        super().__init__(bits, signed)
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
        return f"{super().extra_repr()}, alpha: SGD lr {self.param_lr:g}, L2 {self.param_weight_decay:g}"


def weight_quantizer(
    bits: int, axis: int | None = None, channels: int | None = None, dorefa_rescale: bool = True,
    dorefa_latent_start: bool = True
) -> dorefa.DoReFaWeightQuantizer:
    """PACT's weights are DoReFa's (the paper, and Distiller's PACTQuantizer)."""
    return dorefa.weight_quantizer(bits, axis=axis, channels=channels, dorefa_rescale=dorefa_rescale,
                                   dorefa_latent_start=dorefa_latent_start)


def act_quantizer(
    bits: int, signed: bool = True, pact_alpha_init: float | None = None, pact_alpha_decay: float = 1e-4,
    pact_alpha_lr: float = ALPHA_LR
) -> PACTQuantizer:
    return PACTQuantizer(bits, signed=signed, alpha_init=pact_alpha_init, alpha_decay=pact_alpha_decay,
                         alpha_lr=pact_alpha_lr)
