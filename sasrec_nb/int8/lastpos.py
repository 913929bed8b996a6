"""The inference path shared by the FP32 and the integer models ("lastpos").

``model.scores(seqs)`` needs the hidden state of the last position only. Every block but the last
must still run on all positions (their outputs are the last block's keys and values), but the last
block's queries, FFN and the final LayerNorm are needed at the last position alone (paper form):

    h = LN_attn(x);      x_t ← x_t + Attn(h_t, h, h)    (keys/values: all positions, mask row t)
    x_t ← x_t + FFN(LN_ffn(x_t))
    F_t = LN_last(x_t)

This is an algorithmic saving, not quantization: both sides of every speed comparison use it, so
that the FP32/INT8 ratio measures quantization alone. The function works on any module shaped like
:class:`~sasrec_nb.model.SASRec` (``embed``, ``blocks``, ``last_ln``), which is how the integer model
reuses it: its Linears are integer kernels, everything else is the model's own code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Block, attention_mask

#: items scored at once by :func:`chunked_top_k`: a batch of 256 then writes 64 MB of scores, not 1 GB at 1 M items
CHUNK_ITEMS = 1 << 16


def chunked_top_k(score_rows, hidden: torch.Tensor, num_rows: int, k: int = 10,
                  chunk: int = CHUNK_ITEMS) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, row ids) of every table row's score, scored ``chunk`` rows at a time.

    ``score_rows(hidden, lo, hi)`` returns the scores ``[B, hi − lo]`` of rows lo … hi − 1. Each chunk's top-k is
    merged with the running top-k, so at most B × (chunk + k) scores exist at once instead of B × num_rows: the
    same recommendations (up to the order of exact ties) without materialising the score matrix.
    """
    best_v = best_i = None
    for lo in range(0, num_rows, chunk):
        hi = min(lo + chunk, num_rows)
        v, i = score_rows(hidden, lo, hi).topk(min(k, hi - lo), dim=1)
        i += lo
        if best_v is not None:
            v, j = torch.cat([best_v, v], 1).topk(min(k, v.shape[1] + best_v.shape[1]), dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_v, best_i = v, i
    return best_v, best_i


def last_block(block: Block, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """:meth:`Block.forward` for the last position only: ``[B, L, d] → [B, 1, d]``."""
    base, queries, keys = block.attention_inputs(x)
    x_t = base[:, -1:] + block.attn_out(block.attn(queries[:, -1:], keys, mask[:, :, -1:]))
    return block.feed_forward(x_t) * keep[:, -1:]


def last_hidden(model: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
    """F_t, the final hidden state at the last position ``[B, d]``, computed with lastpos."""
    x, keep = model.embed(seqs)
    mask = attention_mask(seqs)
    *first, last = model.blocks
    for block in first:
        x = block(x, mask, keep)
    return model.last_ln(last_block(last, x, mask, keep))[:, 0]


def padding_bias(rows: int, device: torch.device | None = None) -> torch.Tensor:
    """GEMM bias that gives column 0 (padding) the score −inf, as ``model.scores`` does."""
    bias = torch.zeros(rows, device=device)
    bias[0] = float("-inf")
    return bias


class FP32Scorer(nn.Module):
    """``model.scores`` through lastpos: ``head(F_t) = F_t · M[0..N]ᵀ + bias`` with bias₀ = −inf.

    Scoring the whole table (padding row included) with a −inf bias avoids the copy that slicing and
    padding would make; the integer head does the same.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("bias", padding_bias(model.num_items + 1, model.item_emb.weight.device))

    @torch.no_grad()
    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.model.head_input(hidden), self.model.item_table(), self.bias)

    @torch.no_grad()
    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[B, num_items + 1]``, equal to ``model.scores(seqs)`` up to float rounding."""
        return self.head(last_hidden(self.model, seqs))

    @torch.no_grad()
    def recommend(self, seqs: torch.Tensor, k: int = 10, chunk: int = CHUNK_ITEMS) -> torch.Tensor:
        """Item ids ``[B, k]`` of the top-k scores, scored in chunks of items (:func:`chunked_top_k`)."""
        h = self.model.head_input(last_hidden(self.model, seqs))
        table = self.model.item_table()
        rows = lambda x, lo, hi: F.linear(x, table[lo:hi], self.bias[lo:hi])  # noqa: E731
        return chunked_top_k(rows, h, len(table), k, chunk)[1]

    forward = scores


def fp32_scorer(model: nn.Module) -> FP32Scorer:
    """The FP32 (or fake-quant) model's scores computed through the lastpos path."""
    return FP32Scorer(model)
