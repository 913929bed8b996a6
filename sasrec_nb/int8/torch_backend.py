"""Back end (a): PyTorch's own integer kernels on x86 (oneDNN), with the learned scales.

Every kernel runs on plain ``uint8`` / ``int8`` tensors (no quantized tensor dtype, no
``quantize_per_tensor``: both are deprecated since PyTorch 2.13); scales and zero points live here, in
the modelling code. The kernels, all accumulating in int32:

* every Linear and the scoring head: oneDNN's ``qlinear_pointwise`` (the x86 kernel behind
  ``torch.compile``'s int8 lowering) on activation codes u = clamp(round(x / s), lo, hi) + zp (uint8; zp
  128 for signed inputs), computed with the fake-quant model's own rounding, and int8 weights per output
  channel packed once; it returns s_x · s_w ⊙ Σ (u − zp) q_w + b in FP32;
* named points (embed_out, attn_out, ffn_out): x̂ = s · clamp(round(x / s), lo, hi) in float.

**Exact on every x86 CPU.** With VNNI (``vpdpbusd``) the u8 × s8 products are summed in int32. Without it
(AVX2, AVX-512 before Cascade Lake) the kernels sum *pairs* of products in int16 first (``vpmaddubsw``),
which saturates when 255 · 128 · 2 > 32767: the integer model then silently disagrees with its twin
(about half the top-10 lists differ on an AVX2 EPYC). PyTorch's x86 observers avoid this with
``reduce_range`` (7-bit activations), which would change the learned grid. Here :func:`pair_sums_saturate`
probes the kernel once; where it saturates, each weight is split as q = 2a + b (a = q >> 1 ∈ [−64, 63],
b = q & 1), two GEMMs whose pair sums fit in int16, summed in FP32: exact, at twice the GEMM cost.

The model around these kernels is :class:`~sasrec_nb.model.SASRec`'s own code (embedding, attention,
LayerNorms, residuals in FP32), run through the lastpos path of :mod:`.lastpos`.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..model import SASRec
from .lastpos import CHUNK_ITEMS, chunked_top_k, last_hidden, padding_bias
from .state import Grid, is_quantized, state_bytes


def on_grid(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """x̂ = s · clamp(round(x / s), lo, hi), computed as the fake-quant model computes it."""
    return torch.clamp(torch.round(x / grid.scale), grid.lo, grid.hi) * grid.scale


def codes_u8(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """u = clamp(round(x / s), lo, hi) + zp as ``uint8``: the twin's rounding (x / s, half to even), exactly."""
    return (torch.clamp(torch.round(x / grid.scale), grid.lo, grid.hi) + grid.zero_point).to(torch.uint8)


def _gemm(u: torch.Tensor, grid: Grid, packed: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor,
          bias: torch.Tensor | None) -> torch.Tensor:
    """s_x · s_w ⊙ Σ (u − zp) q_w (+ bias) in FP32: oneDNN's u8 × s8 GEMM with int32 accumulation."""
    return torch.ops.onednn.qlinear_pointwise(u, grid.scale, grid.zero_point, packed, scale, zeros, bias, 1.0, 0,
                                              torch.float32, "none", [], "")


@lru_cache(maxsize=1)
def pair_sums_saturate() -> bool:
    """Whether this CPU's u8 × s8 kernel saturates pairwise int16 sums (x86 without VNNI): one probe GEMM
    of 255 × (−128) over 64 terms, whose exact value is −2,088,960."""
    u = torch.full((1, 64), 255, dtype=torch.uint8)
    packed = torch.ops.onednn.qlinear_prepack(torch.full((1, 64), -128, dtype=torch.int8), None)
    y = _gemm(u, Grid(1.0, 0, 255), packed, torch.ones(1), torch.zeros(1, dtype=torch.long), None)
    return y.item() != 255 * -128 * 64


def weight_parts(codes: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """``[(factor, part)]`` with Σ factor · part = codes: the codes themselves, or 2a + b where pair sums
    would saturate (see the module docstring)."""
    if not pair_sums_saturate():
        return [(1.0, codes)]
    return [(2.0, codes >> 1), (1.0, codes & 1)]


def add_offset_term(y: torch.Tensor, u: torch.Tensor, grid: Grid, offset: torch.Tensor | None) -> torch.Tensor:
    """y + o ⊗ Σ x̂, the exact correction of an offset weight grid (DoReFa; see :func:`.state.weight_codes`).

    w = s_w q + o, so x̂ · w = s_w (x̂ · q) + o Σ x̂, with Σ x̂ = s_x Σ (u − zp) from the same codes.
    """
    if offset is None:
        return y
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


class Int8Linear(nn.Module):
    """y = s_x s_w ⊙ (u − zp) · qᵀ + b [+ o ⊗ Σ x̂]: int8 weights packed for oneDNN, uint8 activation codes."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None,
                 bias: torch.Tensor | None, grid: Grid):
        super().__init__()
        self.grid = grid
        self.parts = [(factor, torch.ops.onednn.qlinear_prepack(part.contiguous(), None))
                      for factor, part in weight_parts(codes)]
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("zeros", torch.zeros(codes.shape[0], dtype=torch.long))
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())
        self.register_buffer("offset", offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_codes(codes_u8(x.reshape(-1, x.shape[-1]), self.grid)).view(*x.shape[:-1], -1)

    def from_codes(self, u: torch.Tensor) -> torch.Tensor:
        """The output for activation codes ``u`` [rows, in] already on this layer's grid."""
        (first, packed), *rest = self.parts
        y = _gemm(u, self.grid, packed, self.scale, self.zeros, self.bias if first == 1.0 else None)
        for factor, packed in rest:  # the split weights: y = 2 · (a part) + (b part) + bias
            y = y.mul_(first).add_(_gemm(u, self.grid, packed, self.scale, self.zeros, self.bias))
        return add_offset_term(y, u, self.grid, self.offset)


class Int8Head(nn.Module):
    """Scores = s_x s_i ⊙ (u − zp) · q_iᵀ + bias (−inf on padding) [+ o ⊗ Σ x̂] for hidden states [B, d].

    The table is packed in chunks of :data:`~.lastpos.CHUNK_ITEMS` rows, so :meth:`recommend` can take the top-k
    chunk by chunk (the hidden states are quantized once) without writing the B × N score matrix."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None, grid: Grid,
                 chunk: int = CHUNK_ITEMS):
        super().__init__()
        self.grid, self.num_rows = grid, codes.shape[0]
        bias = padding_bias(codes.shape[0])
        self.chunks = nn.ModuleList(
            Int8Linear(codes[lo:lo + chunk], scale[lo:lo + chunk], None if offset is None else offset[lo:lo + chunk],
                       bias[lo:lo + chunk], grid) for lo in range(0, codes.shape[0], chunk))
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = codes_u8(x, self.grid)
        return torch.cat([c.from_codes(u) for c in self.chunks], dim=1)

    def recommend(self, x: torch.Tensor, k: int = 10) -> torch.Tensor:
        """Row ids ``[B, k]`` of the top-k scores, chunk by chunk (:func:`~.lastpos.chunked_top_k`)."""
        u = codes_u8(x, self.grid)
        rows = lambda _, lo, hi: self.chunks[lo // self.chunk].from_codes(u)  # noqa: E731
        return chunked_top_k(rows, u, self.num_rows, k, self.chunk)[1]


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
    """A real int8 SASRec on PyTorch's oneDNN kernels, built from :func:`.state.model_state`.

    ``scores(seqs)`` equals the fake-quant model's ``scores`` up to float rounding, and rare one-code
    differences where x/s lies within float error of a rounding boundary; ``head(hidden)`` is the int8
    scoring head alone.
    """

    def __init__(self, state: dict):
        super().__init__()
        self.state = state
        with torch.device("meta"):
            body = SASRec(**state["config"])
        _swap(body, state)
        t = state["tensors"]
        self.scorer = Int8Head(*_weights(t, "item_emb"), Grid.of(t["head_input.grid"]))
        self.body = body.eval()

    @torch.no_grad()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` of hidden states ``[B, d]``: one int8 GEMM against the item table."""
        return self.scorer(hidden)

    @torch.no_grad()
    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` of the item after the last position; column 0 is −inf."""
        return self.scorer(last_hidden(self.body, seqs))

    @torch.no_grad()
    def recommend(self, seqs: torch.Tensor, k: int = 10) -> torch.Tensor:
        """Item ids ``[B, k]`` of the top-k scores, without the full score matrix (chunks of items)."""
        return self.scorer.recommend(last_hidden(self.body, seqs), k)

    forward = scores

    def saved_bytes(self) -> int:
        """Size of the saved integer state (``torch.save``)."""
        return state_bytes(self.state)
