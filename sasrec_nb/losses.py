"""Full softmax cross-entropy over the item table, computed in row chunks with its gradient.

The next-item loss scores every labelled position against every item (Klenitskiy & Vasilev 2023):
for a hidden state h and the item table M, ℓ = −log softmax(h Mᵀ)_target. Written as
``F.cross_entropy(h @ M.T, t)``, autograd keeps the whole ``[positions, items]`` logit matrix and
its log-softmax (on the full profile 20,000 × 3,416 floats, 270 MB each) and streams them through
memory four more times in the backward pass.

:func:`softmax_cross_entropy` does the same arithmetic chunk by chunk, so that each chunk's logits
stay in the CPU cache, and computes the gradient on the way (Liger Kernel's fused linear
cross-entropy, Hsu et al. 2024):

    ∂ℓ/∂logits = softmax(h Mᵀ) − onehot(t)        ∂ℓ/∂h = (∂ℓ/∂logits) M        ∂ℓ/∂M = (∂ℓ/∂logits)ᵀ h

The backward pass then only scales the stored gradients. Same values and gradients as
``F.cross_entropy`` up to float rounding (tested); the loss cannot be differentiated twice.

**Distillation** (Hinton et al. 2015, at temperature 1, as LSQ's "LSQ + KD" runs use it, Esser et al. 2020 §3.6):
with a teacher's hidden states and table, the one-hot target becomes the mixture
q = (1 − α) · onehot(t) + α · softmax(h_T M_Tᵀ), and ℓ = −Σ q · log softmax(h Mᵀ): (1 − α) times the task loss
plus α times the cross-entropy to the teacher's distribution (its KL divergence up to the teacher's entropy, a
constant). The gradient keeps its form, ∂ℓ/∂logits = softmax(h Mᵀ) − q, so the teacher costs one more product per
chunk and no extra memory.
"""
from __future__ import annotations

import torch

#: rows per chunk: 256 × 3,416 logits (3.5 MB) stay in a CPU cache; of 128-1024, 256 and 384 were fastest
#: on the full profile
CHUNK_ROWS = 256


class _ChunkedSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, chunk: int,
                teacher_hidden: torch.Tensor | None, teacher_table: torch.Tensor | None, alpha: float) -> torch.Tensor:
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_table = torch.zeros_like(table)
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, n, chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            rows = torch.arange(len(t), device=t.device)
            log_p = torch.log_softmax(h @ table.T, dim=-1)
            total -= (1.0 - alpha) * log_p[rows, t].sum(dtype=torch.float64)
            soft = None
            if teacher_hidden is not None:
                soft = torch.softmax(teacher_hidden[start:start + chunk] @ teacher_table.T, dim=-1)
                total -= alpha * (soft * log_p).sum(dtype=torch.float64)
            d_logits = log_p.exp_()
            d_logits[rows, t] -= 1.0 - alpha
            if soft is not None:
                d_logits.sub_(soft, alpha=alpha)
            torch.mm(d_logits, table, out=grad_hidden[start:start + chunk])
            grad_table.addmm_(d_logits.T, h)
        ctx.save_for_backward(grad_hidden, grad_table)
        ctx.n = n
        return (total / n).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_table = ctx.saved_tensors
        scale = grad_loss / ctx.n
        return grad_hidden * scale, grad_table * scale, None, None, None, None, None


def softmax_cross_entropy(hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                          chunk: int = CHUNK_ROWS, teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
                          alpha: float = 0.0) -> torch.Tensor:
    """Mean of −log softmax(hidden @ tableᵀ)[targets]; with ``teacher = (teacher_hidden, teacher_table)`` and
    ``alpha`` in (0, 1], the mean of −Σ q · log softmax(hidden @ tableᵀ) with the distillation target q above.

    ``hidden [N, d]``, ``table [V, d]``, ``targets [N]`` in 0..V−1; the teacher's ``[N, d']`` and ``[V, d']`` (no
    gradient flows to the teacher).
    """
    if not 0.0 <= alpha <= 1.0 or (alpha > 0) != (teacher is not None):
        raise ValueError(f"distillation needs a teacher and a weight alpha in (0, 1] (without a teacher, alpha 0); "
                         f"got alpha {alpha!r} and {'a' if teacher is not None else 'no'} teacher")
    if hidden.dim() != 2 or table.dim() != 2 or hidden.shape[1] != table.shape[1]:
        raise ValueError(f"hidden [N, d] and table [V, d] must share d, "
                         f"got {tuple(hidden.shape)} and {tuple(table.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be [N] = [{hidden.shape[0]}], got {tuple(targets.shape)}")
    if len(targets) == 0:
        raise ValueError("no labelled positions: the loss of an empty batch is undefined")
    if teacher is not None:
        t_hidden, t_table = teacher
        if t_hidden.shape[0] != hidden.shape[0] or t_table.shape[0] != table.shape[0] or t_hidden.dim() != 2 \
                or t_table.shape[1] != t_hidden.shape[1]:
            raise ValueError(f"the teacher must score the same {hidden.shape[0]} positions over the same "
                             f"{table.shape[0]} items: got hidden {tuple(t_hidden.shape)}, table {tuple(t_table.shape)}")
        teacher = (t_hidden.detach(), t_table.detach())
    return _ChunkedSoftmaxCrossEntropy.apply(hidden, table, targets, chunk, *(teacher or (None, None)), float(alpha))
