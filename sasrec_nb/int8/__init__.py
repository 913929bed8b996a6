"""Real INT8 deployment of a trained uniform-grid QAT SASRec (ste, lsq, pact, dorefa, adaround at 8 bits).

The learned scales are the integer model's scales: weights become int8 codes per output channel, each
Linear's input is quantized with its input quantizer's learned step (uint8, zero point 128 when
signed), the item table is int8 per row for both the lookup and the scoring head (an int8 GEMM), and
the named points are quantize → dequantize where they sit. Softmax, the attention matmuls, LayerNorms
and residual adds stay FP32, as in the fake-quant model.

    state = model_state(qmodel)                 # what is saved: codes, scales, FP32 remainder
    int8 = to_int8(qmodel)                      # back end (a): PyTorch oneDNN kernels
    ort8 = to_int8(qmodel, "onnx", "m.onnx")    # back end (b): ONNX QDQ graph in onnxruntime
    ref = fp32_scorer(model)                    # FP32 through the same lastpos path
    int8.scores(seqs); saved_bytes(int8) / saved_bytes(model)

Modules: :mod:`.state` (conversion, checks), :mod:`.lastpos` (the shared inference path),
:mod:`.torch_backend`, :mod:`.onnx_graph` / :mod:`.onnx_backend`, :mod:`.bench` (timing helpers).
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from .check import compare_with_twin, top_k_agreement
from .lastpos import FP32Scorer, fp32_scorer, last_hidden
from .onnx_backend import OnnxSASRec, export_onnx, onnx_integer_matmuls
from .state import APOT_MESSAGE, Grid, model_state, state_bytes
from .torch_backend import Int8SASRec

BACKENDS = ("torch", "onnx")


def to_int8(model: nn.Module, backend: str = "torch", path: str | Path | None = None,
            threads: int | None = None) -> Int8SASRec | OnnxSASRec:
    """The integer model of a calibrated (or trained) 8-bit uniform-grid fake-quant SASRec.

    ``backend="torch"``: :class:`Int8SASRec` (oneDNN kernels; threads from ``torch.set_num_threads``);
    ``"onnx"``: writes ``path`` and returns an :class:`OnnxSASRec` session with ``threads`` intra-op threads
    (onnxruntime's default when None). Raises ValueError for APoT, bit widths other than 8 and
    uncalibrated quantizers.
    """
    state = model_state(model)
    if backend == "torch":
        return Int8SASRec(state)
    if backend == "onnx":
        if path is None:
            raise ValueError("the onnx back end writes a file: give path=")
        return OnnxSASRec(export_onnx(state, path), threads)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def saved_bytes(model: nn.Module | Int8SASRec | OnnxSASRec) -> int:
    """Bytes on disk: the integer state or ONNX file of an integer model, ``torch.save(state_dict)`` otherwise."""
    if isinstance(model, (Int8SASRec, OnnxSASRec)):
        return model.saved_bytes()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


__all__ = [
    "APOT_MESSAGE", "BACKENDS", "FP32Scorer", "Grid", "Int8SASRec", "OnnxSASRec", "compare_with_twin", "export_onnx",
    "fp32_scorer", "last_hidden", "model_state", "onnx_integer_matmuls", "saved_bytes", "state_bytes", "to_int8",
    "top_k_agreement",
]
