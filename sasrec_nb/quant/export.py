"""Integer export of a fake-quantized model, and the size it would take on disk.

Fake quantization keeps FP32 weights (a QAT checkpoint is no smaller than an FP32 one); the model
shrinks only when every quantized weight is stored as its integer codes plus scales. This is that
storage: ``export_model`` returns, per tensor, an :class:`Exported` or the FP32 tensor itself, and
``packed_state`` the same with sub-byte codes packed (what the size column of the results counts).
"""
from __future__ import annotations

import torch
from torch import nn

from . import packing
from .core import Exported, QuantEmbedding, QuantLinear


def export_model(model: nn.Module) -> dict[str, Exported | torch.Tensor]:
    """Every quantized weight as codes + scale; every other parameter (biases, LayerNorm) as FP32."""
    out: dict[str, Exported | torch.Tensor] = {}
    quantized = set()
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)):
            out[f"{name}.weight"] = m.weight_quantizer.export(m.weight.detach())
            quantized.add(f"{name}.weight")
    for name, p in model.named_parameters():
        if name not in quantized and "quantizer" not in name:
            out[name] = p.detach()
    return out


def storage_bytes(tensors: dict[str, Exported | torch.Tensor]) -> int:
    """Bytes of the stored tensors (codes, scales, level tables, FP32 remainder)."""
    return sum(t.nbytes() if isinstance(t, Exported) else t.numel() * t.element_size() for t in tensors.values())


def packed_state(model: nn.Module) -> dict[str, torch.Tensor | int | bool | tuple[int, ...]]:
    """What a deployment stores: every quantized weight as its codes packed at its bit width
    (``<name>.codes``, ⌈n · bits / 8⌉ bytes, :mod:`.packing`) with their shape, bits and signedness, and its scale,
    level table and offset; every other parameter (biases, LayerNorm, an unquantized table) in FP32.
    ``torch.save`` writes it; :func:`unpacked_codes` reads the codes back."""
    bits = {f"{n}.weight": m.weight_quantizer.bits for n, m in model.named_modules()
            if isinstance(m, (QuantLinear, QuantEmbedding))}
    out: dict[str, torch.Tensor | int | bool | tuple[int, ...]] = {}
    for name, t in export_model(model).items():
        if not isinstance(t, Exported):
            out[name] = t
            continue
        signed = t.codes.dtype.is_signed
        out[f"{name}.codes"] = packing.pack(t.codes, bits[name], signed) if bits[name] <= 8 else t.codes
        out[f"{name}.shape"], out[f"{name}.bits"], out[f"{name}.signed"] = tuple(t.codes.shape), bits[name], signed
        for field in ("scale", "levels", "offset"):
            if getattr(t, field) is not None:
                out[f"{name}.{field}"] = getattr(t, field)
    return out


def unpacked_codes(state: dict, name: str) -> torch.Tensor:
    """The integer codes of weight ``name`` stored in a :func:`packed_state`."""
    bits, codes = state[f"{name}.bits"], state[f"{name}.codes"]
    return packing.unpack(codes, bits, state[f"{name}.signed"], state[f"{name}.shape"]) if bits <= 8 else codes


def model_bytes(model: nn.Module) -> int:
    """Storage of a model: the tensors of its :func:`packed_state` when it is quantized (codes packed at their bit
    width, plus scales, level tables and the FP32 remainder), its FP32 parameters otherwise."""
    return sum(t.numel() * t.element_size() for t in packed_state(model).values() if isinstance(t, torch.Tensor))
