"""Fake quantization for QAT: the shared core, one module per method, and the model swap."""
from .apply import (METHODS, calibrate_activations, capture_inputs, check_bits, make_quantizer, method_options,
                    param_groups, quantize_model, quantizers)
from . import ranges
from .core import Exported, QuantEmbedding, QuantLinear, Quantizer, UniformQuantizer, grad_scale, round_ste

__all__ = [
    "METHODS", "Exported", "QuantEmbedding", "QuantLinear", "Quantizer", "UniformQuantizer",
    "calibrate_activations", "capture_inputs", "check_bits", "grad_scale", "make_quantizer", "method_options",
    "param_groups", "quantize_model", "quantizers", "ranges", "round_ste",
]
