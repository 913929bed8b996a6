"""Building blocks shared by every QAT method.

* :func:`round_ste` / :func:`grad_scale`: the two autograd tricks every method uses
  (straight-through rounding, Bengio et al. 2013; LSQ's gradient scale, Esser et al. 2020 §2.2).
* :class:`Quantizer`: one fake-quantizer. Subclasses differ only in how they parameterise the grid
  and which backward rule they use.
* :class:`QuantLinear` / :class:`QuantEmbedding`: layers that hold a ``weight_quantizer`` and an
  ``input_quantizer`` (the naming of NVIDIA ModelOpt and brevitas).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EPS = torch.finfo(torch.float32).eps


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (the straight-through estimator). Ties go to even."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """x forward, g * grad backward (LSQ's gradient scale, Esser et al. 2020 eq. 5)."""
    return (x - x * g).detach() + x * g


def signed_range(bits: int) -> tuple[int, int]:
    """Full signed integer range: -2^(b-1) .. 2^(b-1) - 1."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def unsigned_range(bits: int) -> tuple[int, int]:
    return 0, 2**bits - 1


def narrow_range(bits: int, signed: bool) -> tuple[int, int]:
    """Symmetric signed codes −(2^(b−1) − 1) … 2^(b−1) − 1 (an exact zero, equal reach both sides),
    or the unsigned range: the grids of the clipping methods (PACT, DoReFa activations)."""
    if signed:
        n = 2 ** (bits - 1) - 1
        return -n, n
    return unsigned_range(bits)


def other_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    """Every dim of x but ``axis`` (all of them when axis is None; −1 is the last): what a per-channel statistic
    reduces."""
    keep = None if axis is None else axis % x.dim()
    return [d for d in range(x.dim()) if d != keep]


def reduce_except(x: torch.Tensor, axis: int | None, fn: str = "amax") -> torch.Tensor:
    """Reduce |x| (fn in amax/mean) over every dim but ``axis``; a scalar when axis is None."""
    a = x.detach().abs()
    if axis is None:
        return getattr(a, fn)()
    return getattr(a, fn)(dim=other_dims(x, axis))


def broadcast(v: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Shape a per-channel vector so that it broadcasts along ``axis`` of x."""
    if axis is None or v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.view(shape)


@dataclass
class Exported:
    """Integer storage of a quantized tensor: ``value = scale * levels[codes]`` (or scale * codes).

    ``levels`` is None for uniform grids (codes are the integers themselves), a 1-D table for
    non-uniform grids (APoT) or offset grids (DoReFa). ``offset`` is added after scaling
    (APoT's mean, re-applied outside the quantized term; zero otherwise).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    axis: int | None
    levels: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    def dequantize(self) -> torch.Tensor:
        q = self.codes.to(torch.float32) if self.levels is None else self.levels[self.codes.long()]
        y = broadcast(self.scale, q, self.axis) * q
        return y if self.offset is None else y + broadcast(self.offset, q, self.axis)

    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in (self.scale, self.levels, self.offset) if t is not None)
        return self.codes.numel() * self.codes.element_size() + extra


class Quantizer(nn.Module):
    """A fake-quantizer: ``forward(x)`` returns x mapped onto the grid, still in float.

    Life cycle (the modes of ``torch.ao``'s FakeQuantize, kept as two flags):

    * ``calibrating``: forward returns x unchanged and remembers a sample of it; :meth:`finish_calibration`
      initialises the grid from what was seen (weights are initialised directly with :meth:`init_from`).
    * ``enabled``: fake-quantize (default). When disabled, forward is the identity.

    Grid parameters are created in ``__init__`` and only filled in place later, so an optimizer built
    after :func:`quantize_model` always holds the tensors that train.
    """

    method: str = "base"
    supported_bits: tuple[int, int] = (2, 16)
    #: weight decay applied to this quantizer's parameters by :func:`param_groups`
    param_weight_decay: float = 0.0
    #: the optimizer of this quantizer's parameters: "adam" (with a relative learning rate, see
    #: :func:`param_groups`) or "sgd" (momentum 0.9, learning rate ``param_lr``: PACT's α, as in its paper)
    param_optimizer: str = "adam"
    param_lr: float = 0.0

    def __init__(self, bits: int, signed: bool = True, axis: int | None = None, channels: int | None = None):
        super().__init__()
        lo, hi = self.supported_bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
            raise ValueError(f"{type(self).__name__} supports {lo} to {hi} bits (a whole number), got {bits!r}")
        if (axis is None) != (channels is None):
            raise ValueError("give both axis and channels for a per-channel quantizer, or neither")
        self.bits, self.signed, self.axis, self.channels = bits, signed, axis, channels
        self.register_buffer("initialized", torch.tensor(False))
        self.enabled = True
        self.calibrating = False
        #: ``[B, L]`` mask of the real (non-padding) positions of the batch being calibrated, set by
        #: :func:`~sasrec_nb.quant.calibrate_activations`: padding is never attended to or scored, so it must not
        #: shape a grid
        self.real_positions: torch.Tensor | None = None
        self._seen: list[torch.Tensor] = []

    # -- grid ---------------------------------------------------------------------------------
    @property
    def qrange(self) -> tuple[int, int]:
        return signed_range(self.bits) if self.signed else unsigned_range(self.bits)

    def param_shape(self) -> tuple[int, ...]:
        return () if self.channels is None else (self.channels,)

    def init_from(self, x: torch.Tensor) -> None:
        """Set the grid from a tensor (weights, or a calibration sample of activations)."""
        raise NotImplementedError

    def latent_from(self, w: torch.Tensor) -> torch.Tensor:
        """The latent weight this quantizer maps to ``w`` (before rounding), so that QAT from a trained
        model starts at its weights: ``w`` itself, except where a method reparameterises its weights
        (DoReFa's tanh transform)."""
        return w

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The method's fake-quant forward (with its backward rule)."""
        raise NotImplementedError

    def levels(self) -> torch.Tensor:
        """Representable values: ``[n]`` per tensor, ``[channels, n]`` per channel, ascending."""
        raise NotImplementedError

    def export(self, x: torch.Tensor) -> Exported:
        """Integer codes and scale (+ level table) whose dequantization equals ``forward(x)``."""
        raise NotImplementedError

    @property
    def scale(self) -> torch.Tensor:
        """The step size (uniform grids) or clipping value α (PACT, APoT), detached."""
        raise NotImplementedError

    # -- behaviour shared by all methods ----------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._remember(x)
            return x
        if not self.enabled:
            return x
        if not bool(self.initialized):
            with torch.no_grad():
                self.init_from(x)
            self.initialized.fill_(True)
        return self.quantize(x)

    def at_real_positions(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, L, …]`` at the real positions only (``[N, …]``), when :attr:`real_positions` says which they are."""
        mask = self.real_positions
        if mask is not None and x.dim() >= 2 and x.shape[:2] == mask.shape:
            return x[mask]
        return x

    def _remember(self, x: torch.Tensor, keep: int = 1 << 16) -> None:
        x = self.at_real_positions(x.detach())
        if self.axis is None:
            flat = x.flatten()
            if flat.numel() > keep:  # a random sample, plus the extremes (a sample would miss the max)
                idx = torch.randint(flat.numel(), (keep,), generator=torch.Generator().manual_seed(len(self._seen)))
                flat = torch.cat([flat[idx.to(flat.device)], flat.min().view(1), flat.max().view(1)])
            self._seen.append(flat)
        else:
            self._seen.append(x)

    def start_calibration(self) -> None:
        self.calibrating, self._seen = True, []

    def finish_calibration(self) -> None:
        self.calibrating = False
        if self._seen:
            with torch.no_grad():
                self.init_from(torch.cat(self._seen))  # per tensor: flat samples; per channel: [N, …] rows
            self.initialized.fill_(True)
        self._seen = []

    @torch.no_grad()
    def clipped_fraction(self, x: torch.Tensor) -> float:
        """Share of x outside the representable range (a picture every method's notebook draws)."""
        lv = self.levels()
        lo, hi = (lv[..., 0], lv[..., -1])
        lo, hi = broadcast(lo, x, self.axis), broadcast(hi, x, self.axis)
        return ((x < lo) | (x > hi)).float().mean().item()

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis}, {self.channels})"
        return f"bits={self.bits}, signed={self.signed}, {kind}"


class UniformQuantizer(Quantizer):
    """Symmetric uniform grid ``x̂ = s · clamp(round(x / s), q_min, q_max)`` with a step size ``s``.

    Subclasses choose how s is initialised and how its gradient flows.
    """

    def __init__(self, bits: int, signed: bool = True, axis: int | None = None, channels: int | None = None):
        super().__init__(bits, signed, axis, channels)
        self.step = nn.Parameter(torch.ones(self.param_shape()))

    def clamped_step(self) -> torch.Tensor:
        """The step as every forward uses it, clamped at float eps (a step of 0 or below would divide by zero or
        flip the clip range); differentiable, so the forward, :attr:`scale` and :meth:`export` agree."""
        return self.step.clamp_min(EPS)

    @property
    def scale(self) -> torch.Tensor:
        return self.clamped_step().detach()

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.qrange
        return torch.clamp(torch.round(x / broadcast(self.scale, x, self.axis)), lo, hi)

    def levels(self) -> torch.Tensor:
        lo, hi = self.qrange
        grid = torch.arange(lo, hi + 1, dtype=torch.float32, device=self.step.device)
        return self.scale.unsqueeze(-1) * grid

    def export(self, x: torch.Tensor) -> Exported:
        dtype = torch.int8 if self.bits <= 8 and self.signed else torch.uint8 if self.bits <= 8 else torch.int32
        return Exported(self.codes(x.detach()).to(dtype), self.scale.clone(), self.axis)


class QuantLinear(nn.Linear):
    """``y = Q_w(W) · Q_x(x) + b``: a Linear holding a ``weight_quantizer`` and an ``input_quantizer``."""

    def __init__(self, linear: nn.Linear, weight_quantizer: Quantizer, input_quantizer: nn.Module):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        self.load_state_dict(linear.state_dict())
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantEmbedding(nn.Embedding):
    """An embedding whose table goes through ``weight_quantizer`` (per row). Ids are not quantized."""

    def __init__(self, embedding: nn.Embedding, weight_quantizer: Quantizer):
        super().__init__(embedding.num_embeddings, embedding.embedding_dim, padding_idx=embedding.padding_idx,
                         device=embedding.weight.device, dtype=embedding.weight.dtype)
        self.load_state_dict(embedding.state_dict())
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = nn.Identity()

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.quantized_weight(), self.padding_idx)
