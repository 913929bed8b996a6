"""The baseline: uniform fake quantization with a straight-through estimator and a learnable step.

Forward (identical to ``torch.fake_quantize_per_tensor_affine`` with zero point 0):

    x̂ = s · clamp(round(x / s), q_min, q_max)

Backward: round is the identity (STE, Bengio et al. 2013); autograd differentiates the rest, so
∂x̂/∂x = 1 where the rounded code lies in [q_min, q_max] and 0 elsewhere, and the step s receives
round(x/s) − x/s inside the range and q_min or q_max where clipped — LSQ's step gradient without
LSQ's gradient scale or initialisation. s starts at max|x| / q_max (an abs-max observer), or at c / q_max with c
from another range rule (``range_rule``, :mod:`.ranges`: per channel for weights), which is how the round-to-nearest
post-training baselines are built (:func:`sasrec_nb.experiments.ptq_model`).
"""
from __future__ import annotations

import torch

from . import ranges
from .core import UniformQuantizer, broadcast, reduce_except, round_ste


class STEQuantizer(UniformQuantizer):
    method = "ste"

    def __init__(self, bits: int, signed: bool = True, axis: int | None = None, channels: int | None = None,
                 range_rule: str = "absmax"):
        super().__init__(bits, signed, axis, channels)
        self.range_rule = ranges.check_rule(range_rule)

    def init_from(self, x: torch.Tensor) -> None:
        if self.range_rule == "absmax":
            c = reduce_except(x, self.axis).clamp_min(1e-8)
        elif self.axis is None:
            c = ranges.clip_value(x, self.range_rule, *self.qrange)
        else:
            c = ranges.clip_values(x, self.range_rule, *self.qrange, axis=self.axis).view_as(self.step)
        self.step.data.copy_(c / self.qrange[1])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.qrange
        s = broadcast(self.clamped_step(), x, self.axis)
        return torch.clamp(round_ste(x / s), lo, hi) * s


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None,
                     range_rule: str = "absmax") -> STEQuantizer:
    return STEQuantizer(bits, signed=True, axis=axis, channels=channels, range_rule=range_rule)


def act_quantizer(bits: int, signed: bool = True, range_rule: str = "absmax") -> STEQuantizer:
    return STEQuantizer(bits, signed=signed, range_rule=range_rule)
