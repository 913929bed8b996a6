"""Speed measurement of the FP32 and integer SASRec: machine description, timing, synthetic models.

Every path is timed on the same work: ``scores`` (or the head alone) followed by ``torch.topk(10)``,
through the same lastpos inference path, with the same thread count for PyTorch and onnxruntime.
Weights are random: speed does not depend on them (quality is measured against the fake-quant twin
in the tests and the notebooks).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from ..model import SASRec, attention_mask
from ..quant import calibrate_activations, quantize_model
from .lastpos import FP32Scorer, last_block

TOP_K = 10


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


#: the stages :func:`time_parts` reports, in the order they run
PARTS = ("embedding", "attention, LayerNorm, residuals", "Linears", "head", "top-10")


@torch.no_grad()
def time_parts(scorer: nn.Module, seqs: torch.Tensor, k: int = TOP_K, repeat: int = 15) -> dict[str, float]:
    """Median ms of each stage of the lastpos path (:data:`PARTS`) for an FP32 scorer or an integer model.

    The encoder (every block, the last at the last position only, and the final LayerNorm) is timed whole; its
    Linears are timed alone on the inputs they receive there (captured once), and the rest of the encoder is the
    difference: attention softmax and matmuls, LayerNorms, residual adds, quantization points. No profiler: its
    messages would reach a notebook's output."""
    body = scorer.model if isinstance(scorer, FP32Scorer) else scorer.body
    x, keep = body.embed(seqs)
    mask = attention_mask(seqs)

    def encoder() -> torch.Tensor:
        h = x
        for block in body.blocks[:-1]:
            h = block(h, mask, keep)
        return body.last_ln(last_block(body.blocks[-1], h, mask, keep))[:, 0]

    linears = [m for m in body.blocks.modules() if m.__class__.__name__ in ("Linear", "QuantLinear", "Int8Linear")]
    inputs: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, a, i=i: inputs.setdefault(i, a[0])) for i, m in
               enumerate(linears)]
    hidden = encoder()
    for h in handles:
        h.remove()
    scores = scorer.head(hidden)
    encoder_ms = median_ms(encoder, repeat=repeat)
    linear_ms = sum(median_ms(lambda m=m, a=inputs[i]: m(a), repeat=repeat) for i, m in enumerate(linears))
    return {"embedding": median_ms(lambda: body.embed(seqs), repeat=repeat),
            "attention, LayerNorm, residuals": max(encoder_ms - linear_ms, 0.0), "Linears": linear_ms,
            "head": median_ms(lambda: scorer.head(hidden), repeat=repeat),
            "top-10": median_ms(lambda: scores.topk(k, dim=1), repeat=repeat)}


#: issue targets for the best INT8 path against the best FP32 path, quick shape: (part, items, batch, least speed-up)
TARGETS = (("head", 100_000, 1, 3.0), ("head", 100_000, 32, 2.0), ("model", 100_000, 32, 1.8),
           ("model", 100_000, 256, 1.4), ("model", 3416, 1, 1.0), ("model", 3416, 32, 1.0), ("model", 3416, 256, 1.0),
           ("head", 3416, 1, 1.0), ("head", 3416, 32, 1.0), ("head", 3416, 256, 1.0))
INT8_PATHS = ("int8_torch", "int8_onnx")


def target_check(bench: dict, shape: str = "quick") -> list[dict]:
    """Each target of :data:`TARGETS` measured in ``bench`` (a ``scripts/bench_int8.py`` JSON): the best INT8 path's
    speed-up over the best FP32 path of its row, and whether it is met. Rows the benchmark did not time are left out."""
    rows = {(r["part"], r["num_items"], r["batch"]): r for r in bench["results"] if r["shape"] == shape}
    out = []
    for part, items, batch, least in TARGETS:
        r = rows.get((part, items, batch))
        if r is None:
            continue
        best_int8 = max(INT8_PATHS, key=lambda p: r["speedup_vs_best_fp32"][p])
        x = r["speedup_vs_best_fp32"][best_int8]
        out.append({"part": part, "items": items, "batch": batch, "target": least, "speedup": x, "met": x >= least,
                    "best_int8": best_int8, "best_fp32": r["best_fp32"]})
    return out
