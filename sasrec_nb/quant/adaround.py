"""AdaRound: adaptive rounding for post-training quantization (Nagel et al., ICML 2020, arXiv 2004.10568).

The FP weights W and the grid s stay frozen; only a rounding variable V per weight is learned:

    W̃ = s · clip(⌊W/s⌋ + h(V), q_min, q_max)                              soft-quantized weight
    h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1),  ζ = 1.1, γ = −0.1                  rectified sigmoid
    f_reg(V) = Σ 1 − |2h(V) − 1|^β                                          regulariser
    argmin_V ‖f_a(W x) − f_a(W̃ x̃)‖² + λ f_reg(V)                          asymmetric objective

(the paper's eqs. 21-25; numbering quoted from memory, formulas checked against AIMET and BRECQ).

x̃ is the input the already-quantized earlier layers produce ("asymmetric reconstruction"),
f_a the activation after the layer (ReLU for fc1). V₀ = −log((ζ − γ)/(frac(W/s) − γ) − 1), so
h(V₀) = frac(W/s) and hard rounding at init is round-to-nearest. The regulariser is off for the first
20 % of iterations, then β anneals 20 → 2 (AIMET: cosine, BRECQ: linear). After a layer, rounding is
hard: h = 1[V ≥ 0]. Defaults follow AIMET/BRECQ: λ = 0.01, batch 32, Adam 1e-3 on V, 10k iterations.

Choices of this port, stated in notebook 08:

* grid: symmetric, per output channel, from BRECQ's search over 80 shrinking candidates
  s = (1 − 0.01k)·max|w|/q_max minimising the L_p error with p = 2.4 (``adaround_grid="mse"``),
  or the abs-max grid (``"max"``);
* activations: 8-bit quantizers calibrated on FP activations by a named range rule
  (``act_range_rule``, :mod:`.ranges`) and never trained, so that rounding is the only variable. The two
  residual branches of each block (``attn_out``, ``ffn_out``) get one grid per embedding dimension
  (``residual_grid="channel"``): a trained transformer carries a few outlier dimensions there (on the full
  profile, the last FFN branch: |x| up to 66 in four of 50 dimensions, 99 % of values below 1.2), and a fixed
  per-tensor grid must either clip them or round most other values to zero. This is Bondarenko et al.'s (EMNLP 2021,
  arXiv 2109.12948) per-embedding-group quantization with one group per dimension; the methods that learn their
  range, or train through a fixed one, keep per-tensor grids;
* SASRec's item table is a lookup and the scoring head. As a lookup its layer objective is
  Σ(W − W̃)², minimised by round-to-nearest (qat_methods.md §6, pitfall 2), so it is rounded for its
  head role, reconstructing the scores h·Tᵀ of the final hidden states after all blocks; the lookup
  uses the same rounding. The position table is only a lookup: it is rounded to nearest.

The quantizer, its relaxation and the β schedule live in :mod:`.adaround_quantizer`; this module is the
procedure (:func:`calibrate`, :func:`from_state`) and the method's factories for :func:`~.apply.quantize_model`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .adaround_quantizer import (CHUNK, EVAL_ROWS, HEAD_ROWS, AdaRoundQuantizer, FixedQuantizer, act_quantizer,
                                 beta_schedule, mse_step, rectified_sigmoid, rounding_regularizer, weight_quantizer)
from .apply import RESIDUAL_POINTS, calibrate_activations, quantize_model, quantizers
from .core import Quantizer, QuantLinear
from .ranges import DEFAULT


#: the residual branches' activation grids: one per embedding dimension, or one per tensor; and the default
RESIDUAL_GRIDS = ("channel", "tensor")
RESIDUAL_GRID = "channel"


class _Stop(Exception):
    """Raised by a capture hook: nothing after the captured layer needs to run."""


@contextmanager
def _disabled(qs: Iterable[Quantizer]):
    qs = list(qs)
    states = [q.enabled for q in qs]
    for q in qs:
        q.enabled = False
    try:
        yield
    finally:
        for q, state in zip(qs, states):
            q.enabled = state


def _groups(qmodel: nn.Module) -> list[list[tuple[str, QuantLinear]]]:
    """QuantLinears in forward order. q, k and v share a group: all three read the block's input before
    any of them acts, so one pass captures the inputs of all three."""
    groups: list[list[tuple[str, QuantLinear]]] = []
    for name, layer in qmodel.named_modules():
        if isinstance(layer, QuantLinear):
            if name.endswith((".attn.k", ".attn.v")):
                groups[-1].append((name, layer))
            else:
                groups.append([(name, layer)])
    return groups


@torch.no_grad()
def _capture(qmodel: nn.Module, layers: list[nn.Module], seqs: torch.Tensor) -> list[torch.Tensor]:
    """The inputs ``[N, L, d]`` the layers receive (forward pre-hooks; the pass stops after the last one)."""
    seen: list[list[torch.Tensor]] = [[] for _ in layers]

    def hook(i: int):
        def record(_module, args):
            seen[i].append(args[0].detach())
            if i == len(layers) - 1:
                raise _Stop
        return record

    handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        for batch in seqs.split(CHUNK):
            try:
                qmodel(batch)
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(x) for x in seen]


@torch.no_grad()
def _hidden(qmodel: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
    """What the scoring head multiplies with the item table: head_input(final hidden states)."""
    return torch.cat([qmodel.head_input(qmodel(batch)) for batch in seqs.split(CHUNK)])


def _sq_err(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the squared error summed over output features."""
    return (target - pred).pow(2).sum(-1).mean()


@torch.no_grad()
def _errors(wq: AdaRoundQuantizer, target: torch.Tensor, q_out: Callable, xq: torch.Tensor) -> dict[str, float]:
    """Reconstruction error of each rounding mode on the same rows, grid and x̃."""
    errors = {}
    for mode in ("nearest", "soft", "hard"):
        wq.rounding = mode
        errors[mode] = _sq_err(target, q_out(xq)).item()
    wq.rounding = "hard"
    return errors


def _reconstruct(wq: AdaRoundQuantizer, fp_out: Callable, q_out: Callable, x: torch.Tensor, xq: torch.Tensor,
                 row_id: torch.Tensor, gen: torch.Generator, iters: int, batch_size: int, lam: float, lr: float,
                 warmup: float, beta: tuple[float, float], schedule: str, max_rows: int | None,
                 snapshots: list | None) -> dict:
    """Optimise V of one layer, then round hard. x, xq: ``[R, d]`` real positions; row_id: ``[N, L]``, −1 = pad.

    A step takes the positions of ``batch_size`` random sequences (at most ``max_rows`` of them).
    """
    with torch.no_grad():  # FP targets, unless they are too large to keep (the scores)
        targets = None if max_rows else torch.cat([fp_out(c) for c in x.split(4096)])

    def target(rid: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fp_out(x[rid]) if targets is None else targets[rid]

    wq.rounding = "soft"
    wq.v.requires_grad_(True)
    opt = torch.optim.Adam([wq.v], lr=lr)
    curve = {"step": [], "recon": [], "reg": [], "beta": []}
    marks = {0: 0.0, int(0.2 * iters): 0.2, int(0.5 * iters): 0.5}
    log_every = max(1, iters // 100)
    for t in range(iters):
        if snapshots is not None and t in marks:
            snapshots.append((marks[t], wq.h().detach().flatten().clone()))
        rid = row_id[torch.randperm(len(row_id), generator=gen)[:batch_size]].flatten()
        rid = rid[rid >= 0]
        if max_rows and len(rid) > max_rows:
            rid = rid[torch.randperm(len(rid), generator=gen)[:max_rows]]
        b = beta_schedule(t, iters, warmup, *beta, kind=schedule)
        recon = _sq_err(target(rid), q_out(xq[rid]))
        reg = wq.regularizer(b) if t >= warmup * iters else torch.zeros(())
        opt.zero_grad(set_to_none=True)
        (recon + lam * reg).backward()
        opt.step()
        if t % log_every == 0 or t == iters - 1:  # the regulariser as it enters the loss (λ·f_reg), none in warm-up
            logged_reg = lam * reg.item() if t >= warmup * iters else float("nan")
            for key, value in zip(curve, (t, recon.item(), logged_reg, b)):
                curve[key].append(value)
    if snapshots is not None:
        snapshots.append((1.0, wq.h().detach().flatten().clone()))
    wq.v.requires_grad_(False)
    rid = torch.randperm(len(x), generator=gen)[:EVAL_ROWS]
    errors = _errors(wq, target(rid), q_out, xq[rid])
    return {"mse_nearest": errors["nearest"], "mse_adaround": errors["hard"], "mse_soft": errors["soft"],
            "soft_hard_gap": errors["hard"] - errors["soft"], "eval_rows": len(rid), "curve": curve}


def calibrate(model: nn.Module, seqs: torch.Tensor, weight_bits: int = 4, act_bits: int = 8, embed_bits: int = 8,
              iters: int = 10_000, batch_size: int = 32, lam: float = 0.01, lr: float = 1e-3, warmup: float = 0.2,
              beta: tuple[float, float] = (20, 2), schedule: str = "cosine", seed: int = 0, progress: bool = False,
              grid: str = "mse", snapshot_layer: str = "blocks.0.ffn.fc1",
              act_range_rule: str = DEFAULT["adaround"],
              residual_grid: str = RESIDUAL_GRID) -> tuple[nn.Module, dict]:
    """AdaRound PTQ of an FP32 SASRec on unlabeled sequences ``[N, L]``; returns (hard-rounded qmodel, report).

    Layers are rounded in forward order (per block q, k, v, out, fc1, fc2; then the item table as the
    scoring head), each on its FP input x and the input x̃ of the quantized model so far. ``report``:
    ``layers[name]`` holds the errors with round-to-nearest, AdaRound (hard) and soft rounding on the
    same grid and x̃ (on up to 4096 calibration positions), the soft-vs-hard gap, the fraction rounded
    differently from nearest and the loss curve (recon, reg, β per logged step); ``snapshots`` holds
    h(V) of ``snapshot_layer`` at 0/20/50/100 % of its iterations. The item table's lookup uses the
    rounding found for the head; the position table is rounded to nearest. ``residual_grid`` ("channel" or
    "tensor") sets the grids of the residual branches. Same seed, same result.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    qmodel = quantize_model(model, "adaround", weight_bits, act_bits, embed_bits, adaround_grid=grid,
                            act_range_rule=act_range_rule, channel_points=residual_points(residual_grid))
    was_training = qmodel.training
    qmodel.eval()
    requires_grad = {p: p.requires_grad for p in qmodel.parameters()}
    for p in qmodel.parameters():
        p.requires_grad_(False)
    seqs = seqs.to(next(qmodel.parameters()).device)
    mask = seqs != qmodel.item_emb.padding_idx  # only real items count
    row_id = torch.full(mask.shape, -1, dtype=torch.long, device=seqs.device)
    row_id[mask] = torch.arange(int(mask.sum()), device=seqs.device)
    row_id = row_id[mask.any(1)]  # batches are drawn from sequences with at least one item
    everything = list(quantizers(qmodel).values())
    with _disabled(everything):  # activation grids from FP activations (calibrating quantizers pass x through)
        calibrate_activations(qmodel, seqs.split(CHUNK))
    qmodel.pos_emb.weight_quantizer.rounding = "nearest"
    settings = dict(iters=iters, batch_size=batch_size, lam=lam, lr=lr, warmup=warmup, beta=beta, schedule=schedule)

    layers, snapshots = {}, []
    groups = _groups(qmodel)
    bar = tqdm(total=sum(map(len, groups)) + 1, desc="AdaRound", disable=not progress)

    def round_layer(name: str, wq: AdaRoundQuantizer, weight: torch.Tensor, fp_out: Callable, q_out: Callable,
                    x: torch.Tensor, xq: torch.Tensor) -> None:
        stats = _reconstruct(wq, fp_out, q_out, x[mask], xq[mask], row_id, gen,
                             max_rows=HEAD_ROWS if name == "item_emb" else None,
                             snapshots=snapshots if name == snapshot_layer else None, **settings)
        stats["changed_fraction"] = (wq.codes(weight) != wq.nearest_codes(weight)).float().mean().item()
        layers[name] = stats
        bar.update()

    for group in groups:
        modules = [layer for _, layer in group]
        with _disabled(everything):
            xs = _capture(qmodel, modules, seqs)
        xqs = _capture(qmodel, modules, seqs)
        for (name, layer), x, xq in zip(group, xs, xqs):
            act = F.relu if name.endswith("ffn.fc1") else nn.Identity()
            wq = layer.weight_quantizer

            def fp_out(x: torch.Tensor) -> torch.Tensor:
                return act(F.linear(x, layer.weight, layer.bias))

            def q_out(x: torch.Tensor) -> torch.Tensor:
                return act(F.linear(x, wq(layer.weight), layer.bias))

            with torch.no_grad():  # the layer's input quantizer is fixed: apply it once
                xq = layer.input_quantizer(xq)
            round_layer(name, wq, layer.weight, fp_out, q_out, x, xq)

    table, tq = qmodel.item_emb.weight, qmodel.item_emb.weight_quantizer
    with _disabled(everything):
        h = _hidden(qmodel, seqs)
    round_layer("item_emb", tq, table, lambda h: h @ table[1:].T, lambda h: h @ tq(table)[1:].T,
                h, _hidden(qmodel, seqs))
    bar.close()

    frozen = {id(p) for q in everything for p in q.parameters()}
    for p, flag in requires_grad.items():
        p.requires_grad_(flag and id(p) not in frozen)
    qmodel.train(was_training)
    report = {
        "layers": layers,
        "snapshots": {"layer": snapshot_layer, "at": [at for at, _ in snapshots], "h": [h for _, h in snapshots]},
        "position_table": "nearest",
        "config": dict(settings, weight_bits=weight_bits, act_bits=act_bits, embed_bits=embed_bits, grid=grid,
                       act_range_rule=act_range_rule, residual_grid=residual_grid, seed=seed, sequences=len(seqs)),
        "seconds": time.perf_counter() - start,
    }
    return qmodel, report


def residual_points(residual_grid: str) -> tuple[str, ...]:
    """The activation points that get a grid per embedding dimension: the residual branches, or none."""
    if residual_grid not in RESIDUAL_GRIDS:
        raise ValueError(f"residual_grid must be one of {', '.join(RESIDUAL_GRIDS)}, got {residual_grid!r}")
    return RESIDUAL_POINTS if residual_grid == "channel" else ()


def from_state(model: nn.Module, state: dict, weight_bits: int, act_bits: int, embed_bits: int,
               grid: str = "mse", residual_grid: str = RESIDUAL_GRID) -> nn.Module:
    """Rebuild a calibrated AdaRound model from its saved state dict (hard rounding, frozen grids)."""
    from ..training import load_into

    qmodel = quantize_model(model, "adaround", weight_bits, act_bits, embed_bits, adaround_grid=grid,
                            channel_points=residual_points(residual_grid))
    for q in quantizers(qmodel).values():
        q.initialized.fill_(True)
    load_into(qmodel, state, "AdaRound checkpoint")
    qmodel.pos_emb.weight_quantizer.rounding = "nearest"
    return qmodel


__all__ = ["AdaRoundQuantizer", "FixedQuantizer", "act_quantizer", "beta_schedule", "calibrate", "from_state",
           "mse_step", "rectified_sigmoid", "rounding_regularizer", "weight_quantizer"]
