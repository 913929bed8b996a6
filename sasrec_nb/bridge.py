"""The course's quantizers next to PyTorch's maintained QAT library, torchao (notebook 11).

torchao (pytorch/ao) prepares a model for QAT with ``quantize_(model, QATConfig(...))``: every ``nn.Linear`` becomes
a ``FakeQuantizedLinear`` holding a ``weight_fake_quantizer`` and an ``activation_fake_quantizer`` — the course's
``QuantLinear`` with its ``weight_quantizer`` and ``input_quantizer``. This module imports torchao quietly,
prepares a SASRec the library's way, compares its fake-quantized weights with the course's quantizer at the same
scales, and names each course concept in the library's terms.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings

import torch
from torch import nn

#: the course's names, torchao's names (torchao 0.18)
CONCEPTS = [
    ("QuantLinear (weight_quantizer, input_quantizer)",
     "FakeQuantizedLinear (weight_fake_quantizer, activation_fake_quantizer)"),
    ("quant.quantize_model(model, method, bits)", "quantize_(model, QATConfig(activation_config, weight_config, "
                                                  "step='prepare'))"),
    ("a method's weight quantizer, per output row, symmetric", "IntxFakeQuantizeConfig(torch.int8, "
                                                               "granularity='per_channel', is_symmetric=True)"),
    ("STE round (quant.core.round_ste)", "the straight-through round inside _fake_quantize_affine"),
    ("static activation grid, calibrated then learned (LSQ, PACT)",
     "IntxFakeQuantizeConfig(..., is_dynamic=False, range_learning=True) + initialize_fake_quantizers"),
    ("(none in the course: activation grids are static)", "per-token dynamic activations "
                                                         "(granularity='per_token', is_dynamic=True)"),
    ("LSQ's learned step (notebook 04)", "range_learning=True: scale and zero point become nn.Parameters"),
    ("QuantEmbedding (the item table)", "FakeQuantizedEmbedding (weight only)"),
    ("int8.to_int8(model, 'torch' | 'onnx') (notebook 10)",
     "quantize_(model, QATConfig(base_config, step='convert')), then export (torch.export, ONNX, ExecuTorch)"),
]


@contextlib.contextmanager
def quiet():
    """torchao's messages silenced: on a CPU-only machine it logs that its CUDA extensions do not load, and
    registers pytree types that PyTorch warns about, some of them lazily, on first use."""
    loggers = {n: logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")}
    levels = {n: lg.level for n, lg in loggers.items()}
    try:
        for lg in loggers.values():
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lg in loggers.items():
            lg.setLevel(levels[n])


def torchao():
    """The ``torchao`` module, imported :func:`quiet`-ly (with the QAT modules notebook 11 uses)."""
    with quiet():
        import torchao as ao
        import torchao.quantization  # noqa: F401
        import torchao.quantization.qat  # noqa: F401
    return ao


def prepare_qat(model: nn.Module, activations: bool = True) -> nn.Module:
    """A copy of ``model`` prepared by torchao for 8-bit QAT: weights int8 per output row, symmetric; activations
    (when asked) int8 per token, asymmetric, dynamic — torchao's int8-dynamic-activation recipe."""
    torchao()
    from torchao.quantization import quantize_
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    weights = IntxFakeQuantizeConfig(torch.int8, granularity="per_channel", is_symmetric=True)
    acts = IntxFakeQuantizeConfig(torch.int8, granularity="per_token", is_symmetric=False) if activations else None
    out = copy.deepcopy(model)
    with quiet():
        quantize_(out, QATConfig(activation_config=acts, weight_config=weights, step="prepare"))
    return out


def convert(model: nn.Module) -> nn.Module:
    """torchao's convert step without a base config: every fake-quantized module back to a plain one (the weights
    keep what QAT learned; a ``base_config`` would quantize them for a target kernel)."""
    torchao()
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    with quiet():
        quantize_(model, QATConfig(step="convert"))
    return model


def _int_dtype(bits: int) -> torch.dtype:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"torchao's integer fake quantizers take 2 to 8 bits here, got {bits!r}")
    return getattr(torch, f"int{bits}")


@torch.no_grad()
def torchao_fake_quantize(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """torchao's symmetric per-row fake quantization of a weight matrix ``w`` [out, in] at ``bits`` bits (the weight
    config of :func:`prepare_qat`): the fake-quantized weight and torchao's scale of each row, max|w| / ((q_max − q_min)
    / 2)."""
    torchao()
    from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer

    fq = IntxFakeQuantizer(IntxFakeQuantizeConfig(_int_dtype(bits), granularity="per_channel", is_symmetric=True))
    with quiet():
        out = fq(w.detach())
    return out, fq.scale.flatten()


@torch.no_grad()
def course_fake_quantize(w: torch.Tensor, scale: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """The course's uniform weight quantizer (STE's, per output row, codes −2^(b−1) … 2^(b−1) − 1) with the per-row
    step ``scale`` in place of its own abs-max step max|w| / q_max: s · clamp(round(w / s), q_min, q_max)."""
    from .quant import make_quantizer

    ours = make_quantizer("ste", "weight", bits, axis=0, channels=w.shape[0])
    ours.step.data.copy_(scale.flatten())
    ours.initialized.fill_(True)
    return ours(w.detach())


@torch.no_grad()
def weight_pair(linear: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of a ``FakeQuantizedLinear`` (``w``), torchao's per-row scales (``scale``), torchao's fake-quantized
    weight (``torchao``) and the course's at those scales (``course``, :func:`course_fake_quantize`)."""
    w = linear.weight.detach()
    with quiet():
        theirs = linear.weight_fake_quantizer(w)
    scale = linear.weight_fake_quantizer.scale.flatten()
    return {"w": w, "scale": scale, "torchao": theirs, "course": course_fake_quantize(w, scale)}


def half_step_distance(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """How far each w / s (per row) sits from the nearest half-integer k + ½, in steps: where it is within a float
    rounding of 0, torchao's w · (1/s) and the course's w / s may round to neighbouring codes."""
    return ((w / scale[:, None]).frac().abs() - 0.5).abs()


@torch.no_grad()
def compare_weights(linear: nn.Module) -> dict:
    """torchao's fake-quantized weight of a ``FakeQuantizedLinear`` against the course's uniform quantizer (STE's)
    with torchao's own per-row scales: the share of equal values, the largest difference in steps, and whether
    every difference sits on a rounding half-step (torchao divides by multiplying with 1/s, the course divides
    by s: the two round a value within a float rounding of k + ½ differently)."""
    p = weight_pair(linear)
    w, scale, theirs, mine = p["w"], p["scale"], p["torchao"], p["course"]
    differ = mine != theirs
    steps = ((mine - theirs).abs() / scale[:, None]).max().item()
    half = half_step_distance(w, scale) < 1e-4
    return {"equal": 1 - differ.float().mean().item(), "max difference (steps)": round(steps, 4),
            "differences on half-steps": bool((~differ | half).all()),
            "scale = max|w| / 127.5": bool(torch.allclose(scale, w.abs().amax(1) / 127.5))}
