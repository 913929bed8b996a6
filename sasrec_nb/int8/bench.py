"""Speed measurement of the FP32 and integer SASRec: machine description, timing, synthetic models.

Every path is timed on the same work: ``scores`` (or the head alone) followed by ``torch.topk(10)``,
through the same lastpos inference path, with the same thread count for PyTorch and onnxruntime.
Weights are random: speed does not depend on them (quality is measured against the fake-quant twin
in the tests and the notebooks).
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..model import SASRec
from ..quant import calibrate_activations, quantize_model

TOP_K = 10


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (the processor where that file is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info(threads: int) -> dict:
    """Where and how a benchmark ran: platform, CPU, library versions, threads, load, command line."""
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort_version,
        "threads": threads, "load_average_1_5_15": list(os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def set_threads(threads: int) -> None:
    """PyTorch's intra-op threads (onnxruntime sessions take theirs at creation)."""
    torch.set_num_threads(threads)


def median_ms(fn: Callable[[], object], warmup: int = 3, repeat: int = 15, budget_s: float = 5.0) -> float:
    """Median wall time of ``fn`` in ms after ``warmup`` calls; at least 3 runs, at most ``repeat`` or ``budget_s``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def top_k(scores: torch.Tensor) -> torch.Tensor:
    """The recommendation itself: ids of the ``TOP_K`` best items (what every timed call ends with)."""
    return torch.topk(scores, TOP_K).indices


def random_seqs(num_items: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Left-padded random sequences with lengths uniform in 1..length."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, num_items + 1, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    seqs[torch.arange(length) < (length - lengths)[:, None]] = 0
    return seqs


@torch.no_grad()
def synthetic_models(num_items: int, embed_dim: int, num_heads: int, num_blocks: int, max_len: int,
                     residual: str = "paper", method: str = "lsq", seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A random FP32 SASRec and its 8-bit fake-quant twin, calibrated on two random sequences.

    Calibration is kept to two sequences because it scores every position against the whole table
    (``2 · max_len × num_items`` floats), which is large at a million items.
    """
    torch.manual_seed(seed)
    model = SASRec(num_items, embed_dim, num_heads, num_blocks, max_len, dropout=0.0, residual=residual).eval()
    qmodel = quantize_model(model, method, weight_bits=8, act_bits=8, embed_bits=8)
    calibrate_activations(qmodel, [random_seqs(num_items, 2, max_len, seed)])
    return model, qmodel.eval()
