"""LSQ: learned step size quantization (Esser et al., ICLR 2020, arXiv 1902.08153).

    v̄ = round(clip(v / s, −Q_N, Q_P)),   v̂ = v̄ · s                          (eq. 1-2)
    ∂v̂/∂s = −v/s + round(v/s) inside, −Q_N below, Q_P above                 (eq. 3)
    the gradient of s is multiplied by g = 1/√(N · Q_P)                      (§2.2)
    s₀ = 2 · mean|v| / √Q_P                                                  (§2.1)

Signed data use Q_N = 2^(b−1), Q_P = 2^(b−1) − 1; post-ReLU inputs are unsigned (Q_N = 0,
Q_P = 2^b − 1). Choices where the paper is silent, stated here and in notebook 04:

* per-channel weights (one s per output row, as zhutmost/lsq-net does) with N = elements per channel
  (the fan-in), the principled generalisation of the paper's per-tensor N;
* activations: N = features per example (x[0].numel()), s₀ from a calibration sample, not one batch.

g is applied with the detach trick (forward s, backward g·∂s), so autograd yields eq. 3 exactly.
Under Adam g is nearly cancelled (qat_methods.md §0): :func:`sasrec_nb.quant.param_groups` gives
the step sizes their own learning rate.
"""
from __future__ import annotations

import math

import torch

from .core import UniformQuantizer, broadcast, grad_scale, reduce_except, round_ste


class LSQQuantizer(UniformQuantizer):
    method = "lsq"

    def __init__(self, bits: int, signed: bool = True, axis: int | None = None, channels: int | None = None,
                 role: str = "weight", use_grad_scale: bool = True):
        super().__init__(bits, signed, axis, channels)
        self.role = role
        self.use_grad_scale = use_grad_scale  # off only to show what g does (notebook 04)

    def init_from(self, x: torch.Tensor) -> None:
        qp = self.qrange[1]
        self.step.data.copy_((2 * reduce_except(x, self.axis, "mean") / math.sqrt(qp)).clamp_min(1e-8))

    def grad_factor(self, x: torch.Tensor) -> float:
        """g = 1/√(N·Q_P): N = elements per channel (weights), features per example (activations)."""
        if not self.use_grad_scale:
            return 1.0
        if self.axis is not None:
            n = x.numel() // x.shape[self.axis]
        elif self.role == "act" and x.dim() > 1:
            n = x[0].numel()
        else:
            n = x.numel()
        return 1.0 / math.sqrt(n * self.qrange[1])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.qrange
        s = broadcast(grad_scale(self.clamped_step(), self.grad_factor(x)), x, self.axis)
        return round_ste(torch.clamp(x / s, lo, hi)) * s


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None) -> LSQQuantizer:
    return LSQQuantizer(bits, signed=True, axis=axis, channels=channels, role="weight")


def act_quantizer(bits: int, signed: bool = True) -> LSQQuantizer:
    return LSQQuantizer(bits, signed=signed, role="act")
