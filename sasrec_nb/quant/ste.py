"""The baseline: uniform fake quantization with a straight-through estimator and a learnable step.

Forward (identical to ``torch.fake_quantize_per_tensor_affine`` with zero point 0):

    x̂ = s · clamp(round(x / s), q_min, q_max)

Backward: round is the identity (STE, Bengio et al. 2013); autograd differentiates the rest, so
∂x̂/∂x = 1 where the rounded code lies in [q_min, q_max] and 0 elsewhere, and the step s receives
round(x/s) − x/s inside the range and q_min or q_max where clipped — LSQ's step gradient without
LSQ's gradient scale or initialisation. s starts at max|x| / q_max (an abs-max observer).
"""
from __future__ import annotations

import torch

from .core import UniformQuantizer, broadcast, reduce_except, round_ste


class STEQuantizer(UniformQuantizer):
    method = "ste"

    def init_from(self, x: torch.Tensor) -> None:
        self.step.data.copy_(reduce_except(x, self.axis).clamp_min(1e-8) / self.qrange[1])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.qrange
        s = broadcast(self.clamped_step(), x, self.axis)
        return torch.clamp(round_ste(x / s), lo, hi) * s


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None) -> STEQuantizer:
    return STEQuantizer(bits, signed=True, axis=axis, channels=channels)


def act_quantizer(bits: int, signed: bool = True) -> STEQuantizer:
    return STEQuantizer(bits, signed=signed)
