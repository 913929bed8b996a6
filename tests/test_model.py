"""SASRec: shapes, causality, padding invariance, named quantization points."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sasrec_nb.model import RESIDUALS, SASRec, attention_mask, dropout

N, D, L = 40, 32, 12


@pytest.fixture(scope="module", params=RESIDUALS)
def model(request):
    torch.manual_seed(0)
    return SASRec(num_items=N, embed_dim=D, num_heads=2, num_blocks=2, max_len=L, residual=request.param).eval()


def batch(b=4, length=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, N + 1, (b, length), generator=g)
    seqs[1, :5] = 0  # left padding in one row
    return seqs


def test_shapes(model):
    seqs = batch()
    hidden = model(seqs)
    assert hidden.shape == (4, L, D)
    assert model.logits(hidden).shape == (4, L, N)
    assert model.logits(hidden[:, -1]).shape == (4, N)
    scores = model.scores(seqs)
    assert scores.shape == (4, N + 1)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    assert torch.isfinite(scores[:, 1:]).all()
    # scores are the last position's logits, shifted by the padding column
    assert torch.allclose(scores[:, 1:], model.logits(hidden[:, -1]))


def test_shorter_sequences_than_max_len_work(model):
    assert model.scores(batch(length=5)).shape == (4, N + 1)


@pytest.mark.parametrize("t", [0, 3, 7, L - 2])
def test_causality(model, t):
    seqs = batch(seed=1)
    changed = seqs.clone()
    g = torch.Generator().manual_seed(t)
    changed[:, t + 1:] = torch.randint(1, N + 1, changed[:, t + 1:].shape, generator=g)
    assert not torch.equal(changed, seqs)
    with torch.no_grad():
        a, b = model(seqs), model(changed)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)  # later positions do see the change


def test_extra_left_padding_does_not_change_the_last_state(model):
    items = torch.tensor([[5, 17, 3, 39, 22], [1, 2, 3, 4, 40]])
    with torch.no_grad():
        short = model(items)[:, -1]
        for pad in (1, 3, L - 5):
            longer = torch.cat([torch.zeros(2, pad, dtype=torch.long), items], 1)
            assert torch.allclose(model(longer)[:, -1], short, atol=1e-5)
            assert torch.allclose(model.scores(longer), model.scores(items), atol=1e-4)


def test_padding_does_change_the_state_when_it_replaces_items(model):
    # the padding test above is not vacuous: dropping the oldest item changes the output
    items = torch.tensor([[5, 17, 3, 39, 22]])
    with torch.no_grad():
        a = model(items)[:, -1]
        b = model(torch.tensor([[0, 17, 3, 39, 22]]))[:, -1]
    assert not torch.allclose(a, b, atol=1e-3)


def test_named_points_are_identity(model):
    for name in ("embed_out", "head_input", "head_weight"):
        assert type(getattr(model, name)) is nn.Identity
    assert len(model.blocks) == 2
    for i, block in enumerate(model.blocks):
        assert type(block.attn_out) is nn.Identity and type(block.ffn_out) is nn.Identity
        assert model.attn_out[i] is block.attn_out
        assert model.ffn_out[i] is block.ffn_out
    assert len(model.attn_out) == len(model.ffn_out) == 2
    names = dict(model.named_modules())
    for name in ("embed_out", "head_input", "head_weight", "blocks.0.attn_out", "blocks.1.ffn_out"):
        assert name in names


def test_named_points_are_on_the_path(model):
    """Replacing a named point with a function changes the output: the points are really used."""
    seqs = batch()
    with torch.no_grad():
        ref = model.scores(seqs)
        for name in ("embed_out", "head_input", "head_weight"):
            original = getattr(model, name)
            setattr(model, name, _Affine())
            try:
                assert not torch.allclose(model.scores(seqs), ref, atol=1e-4), name
            finally:
                setattr(model, name, original)
        for i in range(2):
            for attr in ("attn_out", "ffn_out"):
                original = getattr(model.blocks[i], attr)
                setattr(model.blocks[i], attr, _Zero())
                try:
                    assert not torch.allclose(model.scores(seqs), ref, atol=1e-4), (i, attr)
                finally:
                    setattr(model.blocks[i], attr, original)
        assert torch.equal(model.scores(seqs), ref)


class _Affine(nn.Module):
    def forward(self, x):
        return x * 0.5 + 0.1


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_every_projection_is_linear(model):
    for block in model.blocks:
        for name in ("q", "k", "v", "out"):
            layer = getattr(block.attn, name)
            assert type(layer) is nn.Linear and layer.weight.shape == (D, D)
        for name in ("fc1", "fc2"):
            assert type(getattr(block.ffn, name)) is nn.Linear


def test_too_long_sequence_raises(model):
    with pytest.raises(ValueError, match="exceeds max_len"):
        model(torch.ones(1, L + 1, dtype=torch.long))


def test_all_padding_row_has_no_nan(model):
    seqs = batch()
    seqs[2] = 0
    with torch.no_grad():
        assert not torch.isnan(model(seqs)).any()
        assert not torch.isnan(model.scores(seqs)).any()
    model.train()
    try:
        loss = model(seqs).sum()
        loss.backward()
        assert all(not torch.isnan(p.grad).any() for p in model.parameters() if p.grad is not None)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_attention_mask():
    m = attention_mask(torch.tensor([[0, 0, 3, 4]]))[0, 0]
    expected = torch.tensor([
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(m, expected)


def test_padding_embedding_is_zero_and_heads_must_divide():
    torch.manual_seed(0)
    m = SASRec(num_items=N, embed_dim=D, num_heads=2, num_blocks=1, max_len=L)
    assert torch.equal(m.item_emb.weight[0], torch.zeros(D))
    assert m.config == dict(num_items=N, embed_dim=D, num_heads=2, num_blocks=1, max_len=L, dropout=0.2,
                         residual="paper")
    with pytest.raises(ValueError, match="divisible"):
        SASRec(num_items=N, embed_dim=30, num_heads=4, num_blocks=1, max_len=L)


def test_dropout_keeps_each_entry_with_probability_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.2, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes through the same mask
    assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0, training=True) is x


def test_attention_trained_with_a_vanishing_dropout_equals_the_sdpa_path(model):
    """Training computes attention by hand (to drop probabilities); it must match SDPA's."""
    attn, seqs = model.blocks[0].attn, batch()
    x = model.embed(seqs)[0]
    mask = attention_mask(seqs)
    want = attn(x, x, mask)
    attn.train()
    attn.dropout = 1e-12
    try:
        got = attn(x, x, mask)
    finally:
        attn.eval()
        attn.dropout = model.config["dropout"]
    assert torch.allclose(got, want, atol=1e-5)


def test_blocks_follow_their_residual_formula():
    """paper (§III-C): x + g(LN(x)) with normalised keys; port: LN(x) + Attn(LN(x), x, x), then LN(y) + FFN(LN(y))."""
    torch.manual_seed(0)
    seqs = batch()
    for residual in RESIDUALS:
        model = SASRec(num_items=N, embed_dim=D, num_heads=2, num_blocks=1, max_len=L, residual=residual).eval()
        block = model.blocks[0]
        with torch.no_grad():
            x, keep = model.embed(seqs)
            mask = attention_mask(seqs)
            h = block.ln_attn(x)
            if residual == "paper":
                y = x + block.attn(h, h, mask)
                want = (y + block.ffn(block.ln_ffn(y))) * keep
            else:
                y = h + block.attn(h, x, mask)
                want = (block.ln_ffn(y) + block.ffn(block.ln_ffn(y))) * keep
            assert torch.allclose(block(x, mask, keep), want, atol=1e-6), residual
    with pytest.raises(ValueError, match="residual must be one of"):
        SASRec(num_items=N, embed_dim=D, residual="post")
