"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Each block is the paper's residual form g(x) = x + Dropout(g(LayerNorm(x))) (§III-C):

    E   = item_emb(s) * sqrt(d) + pos_emb(p)       (paper eq. 1-2 without the sqrt(d): the authors' TF code's
                                                    scale=True and the reference port multiply by it)
    for each block (residual="paper", the default):
        H   = LN_attn(E);   E = E + Attn(H, H, H)                 (eq. 3-5)
        E   = E + W2 ReLU(W1 LN_ffn(E))                           (eq. 6, point-wise FFN)
    F   = LN_last(E)
    r_i = F_t · M_i                                               (eq. 9, shared item table)

``residual="port"`` is the block of the reference PyTorch port (pmixer/SASRec.pytorch), which departs
from the paper: the residual adds the *normalised* stream, and keys/values come from the raw one,

        Q   = LN_attn(E);   E = Q + Attn(Q, E, E);   Q = LN_ffn(E);   E = Q + W2 ReLU(W1 Q)

Both have the same parameters; the full profile keeps the port's form, with which its table was trained.

Every projection is an explicit ``nn.Linear`` (``q/k/v/out``, ``fc1/fc2``) so that every one of them
is quantizable. Attention uses ``F.scaled_dot_product_attention``; while training with dropout it is
computed by hand (:meth:`CausalSelfAttention.probabilities`) so that the attention probabilities get
the same fast :func:`dropout` as the hidden states (SDPA's own dropout samples a Bernoulli mask
several times slower on a CPU; tested equal to SDPA without dropout).

The model knows nothing about quantization. It exposes *named quantization points*, ``nn.Identity``
in FP32, that :func:`sasrec_nb.quant.quantize_model` replaces with quantizers:

    embed_out       the block input after the embedding sum
    attn_out[i]     the attention branch of block i, before its residual add
    ffn_out[i]      the FFN branch of block i, before its residual add
    head_input      the final hidden state that meets the item table
    head_weight     the item table as the scoring head sees it
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


def attention_mask(seqs: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``[B, 1, L, L]``: position i may attend to j when j <= i and j is an item.

    Every position may attend to itself, so padded rows never become all-masked (no NaN).
    """
    length = seqs.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
    keys = (seqs != PAD)[:, None, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=seqs.device)
    return (causal & keys) | eye


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (Srivastava et al. 2014 §10): keep each entry with probability 1 - p, scale by 1/(1 - p).

    The same distribution as ``F.dropout``; the mask is drawn as uniform floats compared with p, which
    on a CPU is about 2.5x faster than the Bernoulli sampler behind ``F.dropout`` (which took a fifth of
    a training step).
    """
    if not training or p == 0.0:
        return x
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    """:func:`dropout` as a module (a drop-in for ``nn.Dropout``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CausalSelfAttention(nn.Module):
    """Multi-head attention with explicit q/k/v/out projections (paper eq. 3-4)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q = nn.Linear(embed_dim, embed_dim)
        self.k = nn.Linear(embed_dim, embed_dim)
        self.v = nn.Linear(embed_dim, embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        return x.view(b, length, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split_heads(self.q(queries)), self.split_heads(self.k(keys)), self.split_heads(self.v(keys))
        if self.training and self.dropout > 0.0:  # dropout on the attention probabilities, as SDPA's dropout_p
            y = dropout(self.probabilities(q, k, mask), self.dropout, True) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).flatten(2))

    @staticmethod
    def probabilities(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """softmax(Q Kᵀ / sqrt(d_head)) over the allowed keys (paper eq. 2)."""
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return logits.masked_fill(~mask, float("-inf")).softmax(-1)

    def weights(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``[B, heads, L, L]`` (for pictures)."""
        return self.probabilities(self.split_heads(self.q(queries)), self.split_heads(self.k(keys)), mask)


class PointWiseFFN(nn.Module):
    """FFN(x) = W2 ReLU(W1 x + b1) + b2, applied at every position (paper eq. 6)."""

    def __init__(self, embed_dim: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, embed_dim)
        self.fc2 = nn.Linear(embed_dim, embed_dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x)))))


RESIDUALS = ("paper", "port")


class Block(nn.Module):
    """Self-attention + point-wise FFN, each with its LayerNorm and residual (see the module docstring)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, residual: str = "paper"):
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.ln_attn = nn.LayerNorm(embed_dim, eps=1e-8)
        self.attn = CausalSelfAttention(embed_dim, num_heads, dropout)
        self.ln_ffn = nn.LayerNorm(embed_dim, eps=1e-8)
        self.ffn = PointWiseFFN(embed_dim, dropout)
        self.attn_out = nn.Identity()
        self.ffn_out = nn.Identity()

    def attention_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(residual stream, queries, keys/values) of the attention sub-layer for the block input ``x``."""
        h = self.ln_attn(x)
        return (x, h, h) if self.residual == "paper" else (h, h, x)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The FFN sub-layer with its residual: x + FFN(LN(x)) (paper) or LN(x) + FFN(LN(x)) (port)."""
        h = self.ln_ffn(x)
        return (x if self.residual == "paper" else h) + self.ffn_out(self.ffn(h))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        base, queries, keys = self.attention_inputs(x)
        x = base + self.attn_out(self.attn(queries, keys, mask))
        return self.feed_forward(x) * keep

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention probabilities ``[B, heads, L, L]`` of this block for its input ``x`` (for pictures)."""
        _, queries, keys = self.attention_inputs(x)
        return self.attn.weights(queries, keys, mask)


class SASRec(nn.Module):
    """SASRec over items ``1..num_items`` (0 is padding; sequences are left-padded)."""

    def __init__(
        self,
        num_items: int,
        embed_dim: int = 128,
        num_heads: int = 4,
        num_blocks: int = 2,
        max_len: int = 50,
        dropout: float = 0.2,
        residual: str = "paper",
    ):
        super().__init__()
        self.config = dict(num_items=num_items, embed_dim=embed_dim, num_heads=num_heads,
                           num_blocks=num_blocks, max_len=max_len, dropout=dropout, residual=residual)
        self.num_items, self.embed_dim, self.max_len = num_items, embed_dim, max_len
        self.item_emb = nn.Embedding(num_items + 1, embed_dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, embed_dim)
        self.emb_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, dropout, residual) for _ in range(num_blocks))
        self.last_ln = nn.LayerNorm(embed_dim, eps=1e-8)
        self.embed_out = nn.Identity()
        self.head_input = nn.Identity()
        self.head_weight = nn.Identity()
        self.reset_parameters()

    # the seed's hook names, kept as read-only views of the named points
    @property
    def attn_out(self) -> list[nn.Module]:
        return [b.attn_out for b in self.blocks]

    @property
    def ffn_out(self) -> list[nn.Module]:
        return [b.ffn_out for b in self.blocks]

    def reset_parameters(self) -> None:
        """Xavier-normal weights as in the reference port; padding row zero."""
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def embed(self, seqs: torch.Tensor) -> torch.Tensor:
        """Item embedding scaled by sqrt(d) plus the learned position of each step from the end."""
        length = seqs.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}; "
                             f"keep the last {self.max_len} items")
        positions = torch.arange(self.max_len - length, self.max_len, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.embed_dim) + self.pos_emb(positions)
        keep = (seqs != PAD).unsqueeze(-1).to(x.dtype)
        return self.embed_out(self.emb_dropout(x) * keep), keep

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, embed_dim]`` for left-padded item ids ``[B, L]``."""
        x, keep = self.embed(seqs)
        mask = attention_mask(seqs)
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.last_ln(x)

    def item_table(self) -> torch.Tensor:
        """The item table as the scoring head sees it ``[num_items + 1, d]``."""
        return self.head_weight(self.item_emb.weight)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items ``1..num_items`` for each hidden state (eq. 9): ``[..., num_items]``."""
        return self.head_input(hidden) @ self.item_table()[1:].T

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items + 1]`` of the next item after the last position; column 0 is -inf."""
        last = self.logits(self(seqs)[:, -1])
        return F.pad(last, (1, 0), value=float("-inf"))
