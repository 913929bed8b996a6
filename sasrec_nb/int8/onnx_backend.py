"""Back end (b): an ONNX file with the learned scales in QuantizeLinear/DequantizeLinear, run by onnxruntime.

``onnx`` and ``onnxruntime`` are the optional ``deploy`` dependencies
(``pip install "sasrec-qat-notebooks[deploy]"``): they are imported only here, when first needed.
The graph itself is written by :mod:`.onnx_graph`.
"""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from .state import model_state

#: onnxruntime's integer GEMM kernels (what its graph optimizer makes of DQ → MatMul / Gemm)
INTEGER_MATMULS = ("MatMulIntegerToFloat", "QGemm", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul")


def require(module: str) -> ModuleType:
    """Import an optional dependency, or fail with how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"the ONNX back end needs {module}: pip install \"sasrec-qat-notebooks[deploy]\" "
                          "(or pip install onnx onnxruntime)") from err


def export_onnx(model: nn.Module | dict, path: str | Path, part: str = "model") -> Path:
    """Write ``model`` (a SASRec, fake-quantized or FP32, or its ``model_state``) as an ONNX file.

    ``part="model"``: ``seqs`` int64 [B, L] → ``scores`` [B, num_items + 1] (lastpos path);
    ``part="head"``: ``hidden`` [B, d] → ``scores``. Quantized tensors become Q/DQ pairs with the learned
    scales; an FP32 model gives the same graph without them.
    """
    onnx = require("onnx")
    from .onnx_graph import SASRecGraph

    state = model if isinstance(model, dict) else model_state(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(SASRecGraph(state).model(part), path)
    return path


def session_options(threads: int | None = None, optimized_path: Path | None = None):
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings on stderr
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


class OnnxSASRec:
    """An ONNX SASRec (or head) in an onnxruntime CPU session; ``scores`` takes and returns torch tensors."""

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = require("onnxruntime")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """``seqs`` [B, L] (model file) or ``hidden`` [B, d] (head file) → scores [B, num_items + 1]."""
        return torch.from_numpy(self.session.run(None, {self.input: inputs.cpu().numpy()})[0])

    __call__ = scores

    def saved_bytes(self) -> int:
        return self.path.stat().st_size


def onnx_integer_matmuls(path: str | Path) -> int:
    """How many integer GEMMs (:data:`INTEGER_MATMULS`) onnxruntime's optimized graph of ``path`` runs."""
    onnx, ort = require("onnx"), require("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort.InferenceSession(str(path), session_options(1, optimized), providers=["CPUExecutionProvider"])
        return sum(node.op_type in INTEGER_MATMULS for node in onnx.load(str(optimized)).graph.node)
