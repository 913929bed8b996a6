"""Back end (a): PyTorch's own integer kernels on x86 (fbgemm and oneDNN), with the learned scales.

Every PyTorch quantization call of the package lives in this module, so that moving off the
deprecated quantized-tensor API is one change here. Activations are uint8 with the learned step s
and zero point 128 when signed (u = q + 128): u8 × s8 runs on VNNI, while s8 activations fall back to a
reference kernel (../shared/reference/int8_cpu_paths.md). The kernels, all accumulating in int32:

* block Linears: fbgemm's ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``, which takes
  FP32 x, quantizes it with the fixed (s, zp), multiplies by int8 weights packed once per output
  channel and returns s_x · s_w ⊙ Σ (u − zp) q_w + b in FP32. Its fixed cost per call is about half
  oneDNN's (≈ 13 vs 22 µs here), which decides batch-1 latency; at 50 × 256 rows oneDNN is ≈ 20 % faster;
* the scoring head: the int8 item table (one scale per row, the −inf padding bias fused) packed for
  both libraries: fbgemm up to :data:`SMALL_BATCH` rows (1.5–2.5× faster at batch 1), oneDNN's
  ``qlinear_pointwise`` above (≈ 1.7× faster at 100 K items and batch 32), fed by
  ``torch.quantize_per_tensor`` codes viewed as uint8 without a copy;
* named points (embed_out, attn_out, ffn_out): x̂ = s · clamp(round(x / s), lo, hi) in float.

The model around these kernels is :class:`~sasrec_nb.model.SASRec`'s own code (embedding, attention,
LayerNorms, residuals in FP32), run through the lastpos path of :mod:`.lastpos`. Both libraries rely on
VNNI (present here) for exact u8 × s8 sums over the full int8 range; without it fbgemm's pairwise int16
sums can saturate, which is why PyTorch's own x86 observers use ``reduce_range``.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..model import SASRec
from .lastpos import last_hidden, padding_bias
from .state import Grid, is_quantized, state_bytes


#: largest batch for which the head uses fbgemm rather than oneDNN (measured crossover: 1 < B < 8)
SMALL_BATCH = 4


@contextmanager
def quiet() -> Iterator[None]:
    """Silence PyTorch's deprecation warnings of the quantized-tensor API (stderr breaks notebooks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*deprecat")
        yield


def on_grid(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """x̂ = s · clamp(round(x / s), lo, hi), computed as the fake-quant model computes it.

    PyTorch's quantize kernels multiply by 1/s instead of dividing by s, which rounds the other way on
    exact half-steps and within a float ulp of them; the embedding output (table codes × scales) lands
    on half-steps often, and on ml-100k this alone changed 3 % of the top-10 lists. Every integer kernel
    here is therefore fed x̂, whose codes any rounding of x̂ · (1/s) recovers exactly.
    """
    return torch.clamp(torch.round(x / grid.scale), grid.lo, grid.hi) * grid.scale


def quantize(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """x on ``grid`` as a ``quint8`` tensor: u = clamp(round(x/s) + zp, 0, 255), one fused kernel."""
    return torch.quantize_per_tensor(on_grid(x, grid), grid.scale, grid.zero_point, torch.quint8)


def quantize_u8(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """The codes u = q + zp as a plain ``uint8`` tensor (the quantized tensor's storage, not a copy)."""
    q = quantize(x, grid)
    return torch.empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())


def add_offset_term(y: torch.Tensor, x: torch.Tensor, grid: Grid, offset: torch.Tensor | None) -> torch.Tensor:
    """y + o ⊗ Σ x̂, the exact correction of an offset weight grid (DoReFa; see :func:`.state.weight_codes`).

    w = s_w q + o, so x̂ · w = s_w (x̂ · q) + o Σ x̂, with Σ x̂ = s_x Σ (u − zp) from the same codes.
    """
    if offset is None:
        return y
    u = quantize_u8(x, grid)
    sum_x = (u.sum(-1, dtype=torch.int32) - grid.zero_point * u.shape[-1]).float() * grid.scale
    y.view(-1, y.shape[-1]).addr_(sum_x.reshape(-1), offset)
    return y


class QDQ(nn.Module):
    """A named activation point: x̂ = s · clamp(round(x / s), lo, hi), in float (:func:`on_grid`)."""

    def __init__(self, grid: Grid):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return on_grid(x, self.grid)


def per_channel_qint8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The int8 codes as a per-output-channel ``qint8`` tensor (re-quantizing s·q by s returns q exactly)."""
    zero = torch.zeros(len(scale), dtype=torch.long)
    return torch.quantize_per_channel(codes.float() * scale[:, None], scale.double(), zero, 0, torch.qint8)


class Int8Linear(nn.Module):
    """y = s_x s_w ⊙ (u − zp) · qᵀ + b [+ o ⊗ Σ x̂]: fbgemm's fused FP32-in, FP32-out int8 Linear."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None,
                 bias: torch.Tensor | None, grid: Grid):
        super().__init__()
        self.grid = grid
        self.packed = torch.ops.quantized.linear_prepack(per_channel_qint8(codes, scale.float()),
                                                         None if bias is None else bias.float())
        self.register_buffer("offset", offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.grid
        y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(on_grid(x, g), g.scale, g.zero_point,
                                                                               self.packed)
        return add_offset_term(y, x, g, self.offset)


class Int8Head(Int8Linear):
    """Scores = s_x s_i ⊙ (u − zp) · q_iᵀ + bias (−inf on padding) [+ o ⊗ Σ x̂] for hidden states [B, d].

    Batches up to :data:`SMALL_BATCH` use fbgemm's kernel (:class:`Int8Linear`, lower fixed cost), larger
    ones oneDNN's u8 × s8 GEMM on uint8 codes, which blocks a large table better.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None, grid: Grid):
        super().__init__(codes, scale, offset, padding_bias(codes.shape[0]), grid)
        self.onednn = torch.ops.onednn.qlinear_prepack(codes.contiguous(), None)
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("zero_point", torch.zeros(codes.shape[0], dtype=torch.long))
        self.register_buffer("bias", padding_bias(codes.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= SMALL_BATCH:
            return super().forward(x)
        g = self.grid
        y = torch.ops.onednn.qlinear_pointwise(quantize_u8(x, g), g.scale, g.zero_point, self.onednn, self.scale,
                                               self.zero_point, self.bias, 1.0, 0, torch.float32, "none", [], "")
        return add_offset_term(y, x, g, self.offset)


class Int8Embedding(nn.Module):
    """Rows of an int8 table, dequantized on lookup: s_i · q_i, or levels[q_i + 128] · m_i for an offset
    grid (DoReFa: the twin's own c · (2j/255 − 1), bit for bit; s · q + o differs from it by a float ulp,
    enough to move the embedding output across a rounding half-step)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, levels: torch.Tensor | None = None,
                 magnitude: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scale", (scale if levels is None else magnitude).float().unsqueeze(-1))
        self.register_buffer("levels", levels)

    def dequantized(self) -> torch.Tensor:
        return self.forward(torch.arange(len(self.codes)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        codes = F.embedding(ids, self.codes)
        unit = codes.float() if self.levels is None else self.levels[codes.long() + 128]
        return unit * F.embedding(ids, self.scale)


def _weights(t: dict, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return t[f"{name}.weight"], t[f"{name}.weight_scale"], t.get(f"{name}.weight_offset")


def _table(t: dict, name: str) -> Int8Embedding:
    return Int8Embedding(t[f"{name}.weight"], t[f"{name}.weight_scale"], t.get(f"{name}.weight_levels"),
                         t.get(f"{name}.weight_magnitude"))


def _swap(body: SASRec, state: dict) -> None:
    """Replace every Linear, Embedding, LayerNorm and named point of a meta-device SASRec."""
    t = state["tensors"]
    for name, m in list(body.named_modules()):
        if isinstance(m, (nn.Linear, nn.Embedding)) and not is_quantized(state, name):
            raise ValueError(f"the torch back end needs a fully quantized model; {name} is FP32")
        if isinstance(m, nn.Linear):
            new: nn.Module = Int8Linear(*_weights(t, name), t.get(f"{name}.bias"), Grid.of(t[f"{name}.input_grid"]))
        elif name == "pos_emb":  # max_len rows: int8 on disk, dequantized once at load
            new = nn.Embedding.from_pretrained(_table(t, name).dequantized())
        elif isinstance(m, nn.Embedding):
            new = _table(t, name)
        elif isinstance(m, nn.LayerNorm):
            new = nn.LayerNorm(m.normalized_shape, eps=m.eps)
            new.load_state_dict({"weight": t[f"{name}.weight"], "bias": t[f"{name}.bias"]})
        elif f"{name}.grid" in t and name != "head_input":  # the head quantizes its input itself
            new = QDQ(Grid.of(t[f"{name}.grid"]))
        else:
            continue
        body.set_submodule(name, new)
    left = [n for n, p in [*body.named_parameters(), *body.named_buffers()] if p.is_meta]
    if left:
        raise ValueError(f"the integer state has no values for {left}")


class Int8SASRec(nn.Module):
    """A real int8 SASRec on PyTorch's fbgemm/oneDNN kernels, built from :func:`.state.model_state`.

    ``scores(seqs)`` equals the fake-quant model's ``scores`` up to float rounding, and rare one-code
    differences where x/s lies within float error of a rounding boundary; ``head(hidden)`` is the int8
    scoring head alone.
    """

    def __init__(self, state: dict):
        super().__init__()
        self.state = state
        with quiet():
            with torch.device("meta"):
                body = SASRec(**state["config"])
            _swap(body, state)
            t = state["tensors"]
            self.scorer = Int8Head(*_weights(t, "item_emb"), Grid.of(t["head_input.grid"]))
        self.body = body.eval()

    @torch.no_grad()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` of hidden states ``[B, d]``: one int8 GEMM against the item table."""
        with quiet():
            return self.scorer(hidden)

    @torch.no_grad()
    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` of the item after the last position; column 0 is −inf."""
        with quiet():
            return self.scorer(last_hidden(self.body, seqs))

    forward = scores

    def saved_bytes(self) -> int:
        """Size of the saved integer state (``torch.save``)."""
        return state_bytes(self.state)
