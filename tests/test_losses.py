"""The chunked softmax cross-entropy equals F.cross_entropy in value and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sasrec_nb.losses import softmax_cross_entropy


def inputs(n=37, v=23, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, d, generator=g, dtype=torch.float64) * 2).requires_grad_()
    table = torch.randn(v, d, generator=g, dtype=torch.float64).requires_grad_()
    return hidden, table, torch.randint(0, v, (n,), generator=g)


@pytest.mark.parametrize("chunk", [1, 5, 37, 256])
def test_value_and_gradients_match_cross_entropy(chunk):
    hidden, table, targets = inputs()
    want = F.cross_entropy(hidden @ table.T, targets)
    want_grads = torch.autograd.grad(want * 3.0, (hidden, table))  # an upstream gradient other than 1
    got = softmax_cross_entropy(hidden, table, targets, chunk=chunk)
    got_grads = torch.autograd.grad(got * 3.0, (hidden, table))
    assert torch.allclose(got, want, rtol=1e-12)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_gradients_flow_through_what_produced_the_inputs():
    hidden, table, targets = inputs()
    x = hidden.detach().clone().requires_grad_()
    want = torch.autograd.grad(F.cross_entropy(torch.tanh(x) @ table.T, targets), x)[0]
    got = torch.autograd.grad(softmax_cross_entropy(torch.tanh(x), table, targets, chunk=4), x)[0]
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_float32_matches_within_rounding():
    hidden, table, targets = inputs(n=600, v=300, d=16)
    h32, t32 = hidden.detach().float().requires_grad_(), table.detach().float().requires_grad_()
    F.cross_entropy(h32 @ t32.T, targets).backward()
    want = h32.grad.clone(), t32.grad.clone()
    h32.grad = t32.grad = None
    softmax_cross_entropy(h32, t32, targets).backward()
    assert torch.allclose(h32.grad, want[0], atol=1e-7) and torch.allclose(t32.grad, want[1], atol=1e-7)


def test_bad_shapes_and_empty_batches_are_refused():
    hidden, table, targets = inputs()
    with pytest.raises(ValueError, match="share d"):
        softmax_cross_entropy(hidden, table[:, :3], targets)
    with pytest.raises(ValueError, match="targets must be"):
        softmax_cross_entropy(hidden, table, targets[:5])
    with pytest.raises(ValueError, match="no labelled positions"):
        softmax_cross_entropy(hidden[:0], table, targets[:0])


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("chunk", [1, 5, 256])
def test_distillation_is_cross_entropy_to_the_mixed_target(alpha, chunk):
    """PyTorch's cross_entropy with class probabilities as the target, q = (1 − α)·onehot + α·softmax(teacher)."""
    hidden, table, targets = inputs()
    t_hidden, t_table, _ = inputs(d=5, seed=1)  # a teacher of another width
    q = (1 - alpha) * F.one_hot(targets, table.shape[0]).double() + alpha * torch.softmax(
        t_hidden.detach() @ t_table.detach().T, -1)
    want = F.cross_entropy(hidden @ table.T, q)
    want_grads = torch.autograd.grad(want * 3.0, (hidden, table))
    got = softmax_cross_entropy(hidden, table, targets, chunk=chunk, teacher=(t_hidden, t_table), alpha=alpha)
    got_grads = torch.autograd.grad(got * 3.0, (hidden, table))
    assert torch.allclose(got, want, rtol=1e-12)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)
    assert t_hidden.grad is None and t_table.grad is None  # the teacher is not trained


def test_distillation_at_alpha_one_is_zero_gradient_when_student_equals_teacher():
    hidden, table, targets = inputs()
    loss = softmax_cross_entropy(hidden, table, targets, teacher=(hidden, table), alpha=1.0)
    grads = torch.autograd.grad(loss, (hidden, table))
    assert all(torch.allclose(g, torch.zeros_like(g), atol=1e-12) for g in grads)


def test_distillation_settings_are_checked():
    hidden, table, targets = inputs()
    with pytest.raises(ValueError, match="needs a teacher"):
        softmax_cross_entropy(hidden, table, targets, alpha=0.5)
    with pytest.raises(ValueError, match="needs a teacher"):
        softmax_cross_entropy(hidden, table, targets, teacher=(hidden, table), alpha=1.5)
    with pytest.raises(ValueError, match="same 37 positions"):
        softmax_cross_entropy(hidden, table, targets, teacher=(hidden[:5], table), alpha=0.5)
