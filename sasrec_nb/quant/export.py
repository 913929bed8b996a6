"""Integer export of a fake-quantized model, and the size it would take on disk.

Fake quantization keeps FP32 weights (a QAT checkpoint is no smaller than an FP32 one); the model
shrinks only when every quantized weight is stored as its integer codes plus scales. This is that
storage: ``export_model`` returns, per tensor, an :class:`Exported` or the FP32 tensor itself.
"""
from __future__ import annotations

import torch
from torch import nn

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


def model_bytes(model: nn.Module) -> int:
    """Storage of a model: integer export when it is quantized, FP32 parameters otherwise.

    Codes are counted at ``bits`` per weight (packed, as a deployment stores sub-byte codes), plus
    scales, level tables and every FP32 tensor left (biases, LayerNorm, position table if unquantized).
    """
    bits = {f"{n}.weight": m.weight_quantizer.bits for n, m in model.named_modules()
            if isinstance(m, (QuantLinear, QuantEmbedding))}
    total = 0
    for name, t in export_model(model).items():
        if isinstance(t, Exported):
            total += t.nbytes() - t.codes.numel() * t.codes.element_size() + (t.codes.numel() * bits[name] + 7) // 8
        else:
            total += t.numel() * t.element_size()
    return total
