"""The integer state of a SASRec: what a deployment saves, read off a (fake-)quantized model.

Every back end is built from this one flat ``dict`` of tensors, named like the model's state dict:

    <linear>.weight           int8 codes q [out, in]             (FP32 weight when not quantized)
    <linear>.weight_scale     per output channel s_w [out]       value = s_w · q (+ offset)
    <linear>.weight_offset    per output channel [out]           only for offset grids (DoReFa)
    <linear>.bias             FP32
    <linear>.input_grid       [scale, q_min, q_max] of the learned input quantizer (per tensor)
    <point>.grid              the same for embed_out, blocks.i.attn_out / ffn_out, head_input; a residual branch
                              may hold one scale per embedding dimension: [s_1 … s_d, q_min, q_max] (AdaRound)
    item_emb.weight …         int8 per row, with weight_scale (+ weight_offset); pos_emb likewise
    <table>.weight_levels     offset grids only: the unit level table [256] and per-row magnitude
    <table>.weight_magnitude  [rows], so a lookup computes levels[q + 128] · magnitude as the twin does
    <layernorm>.weight/bias   FP32

``config`` holds the model's constructor arguments. Only uniform grids become integers: the learned
step of each quantizer is taken from its ``export`` (whose dequantization equals the fake-quant
forward), so the integer model computes what the trained model computed.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn

from ..quant.core import Exported, QuantEmbedding, QuantLinear, Quantizer

BITS = 8
APOT_MESSAGE = (
    "APoT's levels are sums of powers of two, not a uniform grid: an int8 GEMM cannot use them. They "
    "are meant for shift-add hardware; Quantizer.export stores them as integer codes plus a level table "
    "(see sasrec_nb.quant.export), which is the deployable form of an APoT model."
)


@dataclass(frozen=True)
class Grid:
    """An activation grid x̂ = scale · clamp(round(x / scale), lo, hi): per tensor (``scale`` a float) or, at a
    named point only, per embedding dimension (``scale`` a tensor ``[d]`` along the last axis)."""

    scale: float | torch.Tensor
    lo: int
    hi: int

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, torch.Tensor)

    @property
    def zero_point(self) -> int:
        """uint8 zero point: 128 for signed codes (u = q + 128), 0 for unsigned ones."""
        return 128 if self.lo < 0 else 0

    def tensor(self) -> torch.Tensor:
        scale = self.scale.tolist() if self.per_channel else [self.scale]
        return torch.tensor([*scale, self.lo, self.hi], dtype=torch.float64)

    @classmethod
    def of(cls, t: torch.Tensor) -> Grid:
        *scale, lo, hi = t.tolist()
        return cls(scale[0] if len(scale) == 1 else torch.tensor(scale, dtype=torch.float32), int(lo), int(hi))


def _check(q: Quantizer, name: str) -> None:
    if q.method == "apot":
        raise ValueError(f"{name}: {APOT_MESSAGE}")
    if q.bits != BITS:
        raise ValueError(f"{name} has {q.bits} bits: the integer model is int8 only (quantize with 8-bit "
                         "weights, activations and embeddings)")
    if not bool(q.initialized) or not q.enabled:
        raise ValueError(f"{name} is not initialised or is disabled: calibrate the model first")


def act_grid(q: Quantizer, name: str, per_channel: bool = False) -> Grid:
    """The learned step and code range of an activation quantizer, checked to be a uniform grid (per tensor, or
    per embedding dimension where ``per_channel`` allows it: a named point, not the input of an integer GEMM)."""
    _check(q, name)
    ex = q.export(torch.zeros(1, device=q.initialized.device))
    if ex.levels is not None or ex.offset is not None:
        raise ValueError(f"{name}: not a uniform grid; {APOT_MESSAGE}")
    if q.axis is not None and not (per_channel and q.axis in (-1, 2)):
        raise ValueError(f"{name}: an integer GEMM takes one activation scale per tensor; this grid has one per "
                         "channel (only the named points embed_out, attn_out, ffn_out may)")
    lo, hi = q.qrange
    step = ex.scale.float().cpu()
    if not torch.allclose(q.levels().cpu(), step.unsqueeze(-1) * torch.arange(lo, hi + 1, dtype=torch.float32),
                          rtol=1e-5):
        raise ValueError(f"{name}: levels are not step × integers; cannot run it on integer kernels")
    return Grid(step.clone() if q.axis is not None else float(step), lo, hi)


def weight_codes(ex: Exported, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """int8 codes, per-row step and per-row offset (None unless the grid has no zero level).

    A level table that is affine in the code, L_j = a·j + b (DoReFa: a = 2/(2^k − 1), b = −1), is
    re-encoded exactly as w = s·a·(j − 128) + s·(a·128 + b): int8 codes j − 128 with step s·a, and a
    per-row offset s·(a·128 + b) (for DoReFa s/255, half a step) that the GEMM adds as offset ⊗ Σx.
    """
    if ex.axis != 0 or ex.offset is not None:
        raise ValueError(f"{name}: expected a per-row uniform grid; {APOT_MESSAGE}")
    scale = ex.scale.float().cpu()
    if ex.levels is None:
        if ex.codes.dtype != torch.int8:
            raise ValueError(f"{name}: codes of dtype {ex.codes.dtype}, expected int8")
        return ex.codes.cpu(), scale, None
    lv = ex.levels.float().cpu()
    a, b = float(lv[1] - lv[0]), float(lv[0])
    if len(lv) != 2**BITS or not torch.allclose(lv, a * torch.arange(len(lv)) + b, atol=1e-6):
        raise ValueError(f"{name}: level table is not affine in the code; {APOT_MESSAGE}")
    codes = (ex.codes.to(torch.int16) - 128).to(torch.int8).cpu()
    return codes, scale * a, scale * (a * 128 + b)


def _put_weight(state: dict, name: str, module: nn.Module) -> None:
    if isinstance(module, (QuantLinear, QuantEmbedding)):
        _check(module.weight_quantizer, f"{name}.weight_quantizer")
        ex = module.weight_quantizer.export(module.weight.detach())
        codes, scale, offset = weight_codes(ex, f"{name}.weight")
        state[f"{name}.weight"], state[f"{name}.weight_scale"] = codes, scale
        if offset is not None:
            state[f"{name}.weight_offset"] = offset
            if isinstance(module, QuantEmbedding):  # looked up, not multiplied: keep the twin's own arithmetic
                state[f"{name}.weight_levels"] = ex.levels.float().cpu()
                state[f"{name}.weight_magnitude"] = ex.scale.float().cpu()
    else:
        state[f"{name}.weight"] = module.weight.detach().float().cpu().clone()


@torch.no_grad()
def model_state(model: nn.Module) -> dict:
    """``{"config": …, "tensors": …}`` of a SASRec: integer where quantized, FP32 elsewhere.

    Raises ValueError for APoT, for bit widths other than 8 and for uncalibrated quantizers.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            _put_weight(tensors, name, m)
            if isinstance(m, nn.Linear) and m.bias is not None:
                tensors[f"{name}.bias"] = m.bias.detach().float().cpu().clone()
            if isinstance(m, QuantLinear):
                tensors[f"{name}.input_grid"] = act_grid(m.input_quantizer, f"{name}.input_quantizer").tensor()
        elif isinstance(m, nn.LayerNorm):
            tensors[f"{name}.weight"] = m.weight.detach().float().cpu().clone()
            tensors[f"{name}.bias"] = m.bias.detach().float().cpu().clone()
        elif isinstance(m, Quantizer) and name.split(".")[-1] in ("embed_out", "attn_out", "ffn_out", "head_input"):
            tensors[f"{name}.grid"] = act_grid(m, name, per_channel=not name.endswith("head_input")).tensor()
    if "item_emb.weight_scale" in tensors and "head_input.grid" not in tensors:
        raise ValueError("the item table is quantized but head_input is not: the int8 head needs its grid")
    return {"config": dict(model.config, dropout=0.0), "tensors": tensors}


def is_quantized(state: dict, name: str) -> bool:
    """Whether ``name`` (a Linear or Embedding) is stored as integer codes."""
    return f"{name}.weight_scale" in state["tensors"]


def state_bytes(state: dict) -> int:
    """Bytes of ``torch.save(state)``: the integer model's file."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes
