"""AdaRound: adaptive rounding for post-training quantization (Nagel et al., ICML 2020, arXiv 2004.10568).

The FP weights W and the grid s stay frozen; only a rounding variable V per weight is learned:

    W̃ = s · clip(⌊W/s⌋ + h(V), q_min, q_max)                              (eq. 22)
    h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1),  ζ = 1.1, γ = −0.1                  (eq. 23)
    argmin_V ‖f_a(W x) − f_a(W̃ x̃)‖² + λ Σ (1 − |2h(V) − 1|^β)             (eq. 21, 24, 25)

x̃ is the input the already-quantized earlier layers produce ("asymmetric reconstruction", §4),
f_a the activation after the layer (ReLU for fc1). V₀ = −log((ζ − γ)/(frac(W/s) − γ) − 1), so
h(V₀) = frac(W/s) and hard rounding at init is round-to-nearest. The regulariser is off for the first
20 % of iterations, then β anneals 20 → 2 (AIMET: cosine, BRECQ: linear). After a layer, rounding is
hard: h = 1[V ≥ 0]. Defaults follow AIMET/BRECQ: λ = 0.01, batch 32, Adam 1e-3 on V, 10k iterations.

Choices of this port, stated in notebook 08:

* grid: symmetric, per output channel, from BRECQ's search over 80 shrinking candidates
  s = (1 − 0.01k)·max|w|/q_max minimising the L_p error with p = 2.4 (``adaround_grid="mse"``),
  or the abs-max grid (``"max"``);
* activations: 8-bit abs-max quantizers calibrated on FP activations and never trained, so that
  rounding is the only variable;
* SASRec's item table is a lookup and the scoring head. As a lookup its layer objective is
  Σ(W − W̃)², minimised by round-to-nearest (qat_methods.md §6, pitfall 2), so it is rounded for its
  head role, reconstructing the scores h·Tᵀ of the final hidden states after all blocks; the lookup
  uses the same rounding. The position table is only a lookup: it is rounded to nearest.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .apply import calibrate_activations, quantize_model, quantizers
from .core import Quantizer, QuantLinear, UniformQuantizer, broadcast, reduce_except
from .ste import STEQuantizer

ZETA, GAMMA = 1.1, -0.1
#: BRECQ's grid search: candidates and the L_p norm it minimises
GRID_CANDIDATES, GRID_P = 80, 2.4
ROUNDING = ("soft", "hard", "nearest")
#: rows of final hidden states per step when reconstructing the scores; rows for the reported errors
HEAD_ROWS, EVAL_ROWS = 256, 4096
#: sequences per forward pass while capturing layer inputs
CHUNK = 256


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) = clip(σ(V)(ζ − γ) + γ, 0, 1) (eq. 23)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def mse_step(x: torch.Tensor, axis: int | None, lo: int, hi: int, p: float = GRID_P) -> torch.Tensor:
    """Per-channel step (1 − 0.01k)·max|x|/q_max, k < 80, with the smallest mean |x − x̂|^p (BRECQ)."""
    amax = reduce_except(x, axis).clamp_min(1e-8)
    best, best_err = amax / hi, torch.full_like(amax, math.inf)
    for k in range(GRID_CANDIDATES):
        s = amax * (1 - 0.01 * k) / hi
        sb = broadcast(s, x, axis)
        err = reduce_except((torch.clamp(torch.round(x / sb), lo, hi) * sb - x).pow(2).pow(p / 2), axis, "mean")
        best = torch.where(err < best_err, s, best)
        best_err = torch.minimum(err, best_err)
    return best


class AdaRoundQuantizer(UniformQuantizer):
    """A frozen symmetric grid s and a learned rounding V for the one weight it was initialised with.

    ``rounding`` selects the forward: "soft" (⌊W/s⌋ + h(V), differentiable in V, used while
    optimising), "hard" (⌊W/s⌋ + 1[V ≥ 0], after optimisation, in eval and export; at init it is
    round-to-nearest) or "nearest" (round(W/s), for comparison). W itself receives no gradient.
    """

    method = "adaround"

    def __init__(self, bits: int, axis: int | None = None, channels: int | None = None, grid: str = "mse"):
        super().__init__(bits, signed=True, axis=axis, channels=channels)
        if grid not in ("mse", "max"):
            raise ValueError(f"adaround_grid must be 'mse' or 'max', got {grid!r}")
        self.grid = grid
        self.step.requires_grad_(False)
        # V has the weight's shape, which a quantizer built from (bits, axis, channels) does not know
        # (the fan-in is missing): init_from creates it from the weight it is given.
        self.v: nn.Parameter | None = None
        self._rounding = "hard"

    @property
    def rounding(self) -> str:
        return self._rounding

    @rounding.setter
    def rounding(self, mode: str) -> None:
        if mode not in ROUNDING:
            raise ValueError(f"rounding must be one of {ROUNDING}, got {mode!r}")
        self._rounding = mode

    def init_from(self, x: torch.Tensor) -> None:
        lo, hi = self.qrange
        step = mse_step(x, self.axis, lo, hi) if self.grid == "mse" else reduce_except(x, self.axis) / hi
        self.step.data.copy_(step.clamp_min(1e-8))
        self.init_rounding(x)

    @torch.no_grad()
    def init_rounding(self, x: torch.Tensor) -> None:
        """V₀ = −log((ζ − γ)/(frac(W/s) − γ) − 1) on the current grid, so that h(V₀) = frac(W/s)."""
        w = x.detach() / broadcast(self.scale, x, self.axis)
        v0 = -torch.log((ZETA - GAMMA) / (w - torch.floor(w) - GAMMA) - 1)
        if self.v is not None and self.v.shape == v0.shape:
            self.v.data.copy_(v0)
        else:
            self.v = nn.Parameter(v0)

    def h(self) -> torch.Tensor:
        return rectified_sigmoid(self.v)

    def regularizer(self, beta: float) -> torch.Tensor:
        """Σ (1 − |2h(V) − 1|^β) (eq. 24): 1 at h = ½, 0 at h ∈ {0, 1}."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def _check(self, x: torch.Tensor) -> None:
        if self.v is None:
            raise RuntimeError("AdaRoundQuantizer has no rounding variable yet: call init_from(weight) first")
        if x.shape != self.v.shape:
            raise ValueError(f"AdaRoundQuantizer rounds only the weight it was initialised with, of shape "
                             f"{tuple(self.v.shape)}; got {tuple(x.shape)}")

    def nearest_codes(self, x: torch.Tensor) -> torch.Tensor:
        return super().codes(x)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of the hard rounding (of round-to-nearest in "nearest" mode)."""
        self._check(x)
        if self.rounding == "nearest":
            return self.nearest_codes(x)
        lo, hi = self.qrange
        floor = torch.floor(x.detach() / broadcast(self.scale, x, self.axis))
        return torch.clamp(floor + (self.v.detach() >= 0).to(x.dtype), lo, hi)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        s = broadcast(self.scale, x, self.axis)
        if self.rounding != "soft":
            return s * self.codes(x)
        self._check(x)
        lo, hi = self.qrange
        return s * torch.clamp(torch.floor(x.detach() / s) + self.h(), lo, hi)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid}, rounding={self.rounding}"


class FixedQuantizer(STEQuantizer):
    """Activations: abs-max calibrated uniform grid, frozen (AdaRound learns rounding only)."""

    method = "adaround"

    def __init__(self, bits: int, signed: bool = True):
        super().__init__(bits, signed=signed)
        self.step.requires_grad_(False)


def weight_quantizer(bits: int, axis: int | None = None, channels: int | None = None,
                     adaround_grid: str = "mse", **_) -> AdaRoundQuantizer:
    return AdaRoundQuantizer(bits, axis=axis, channels=channels, grid=adaround_grid)


def act_quantizer(bits: int, signed: bool = True, **_) -> FixedQuantizer:
    return FixedQuantizer(bits, signed=signed)


def beta_schedule(t: int, iters: int, warmup: float = 0.2, start: float = 20, end: float = 2,
                  kind: str = "cosine") -> float:
    """β at iteration t: ``start`` during warm-up, then cosine (AIMET) or linear (BRECQ) decay to ``end``."""
    progress = max(0.0, (t - warmup * iters) / ((1 - warmup) * iters))
    if kind == "cosine":
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return end + (start - end) * max(0.0, 1 - progress)
    raise ValueError(f"kind must be 'cosine' or 'linear', got {kind!r}")


# -- layer-wise reconstruction on SASRec ---------------------------------------------------------------
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


@torch.no_grad()
def _capture(qmodel: nn.Module, layer: nn.Module, seqs: torch.Tensor) -> torch.Tensor:
    """The input ``[N, L, d]`` that ``layer`` receives (a forward pre-hook; the rest of the pass is skipped)."""
    seen: list[torch.Tensor] = []

    def hook(_module, args):
        seen.append(args[0].detach())
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        for batch in seqs.split(CHUNK):
            try:
                qmodel(batch)
            except _Stop:
                pass
    finally:
        handle.remove()
    return torch.cat(seen)


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
        if t % log_every == 0 or t == iters - 1:
            for key, value in zip(curve, (t, recon.item(), reg.item(), b)):
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
              grid: str = "mse", snapshot_layer: str = "blocks.0.ffn.fc1") -> tuple[nn.Module, dict]:
    """AdaRound PTQ of an FP32 SASRec on unlabeled sequences ``[N, L]``; returns (hard-rounded qmodel, report).

    Layers are rounded in forward order (per block q, k, v, out, fc1, fc2; then the item table as the
    scoring head), each on its FP input x and the input x̃ of the quantized model so far. ``report``:
    ``layers[name]`` holds the errors with round-to-nearest, AdaRound (hard) and soft rounding on the
    same grid and x̃, the fraction rounded differently from nearest and the loss curve; ``snapshots``
    holds h(V) of ``snapshot_layer`` at 0/20/50/100 % of its iterations.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    qmodel = quantize_model(model, "adaround", weight_bits, act_bits, embed_bits, adaround_grid=grid)
    was_training = qmodel.training
    qmodel.eval()
    requires_grad = {p: p.requires_grad for p in qmodel.parameters()}
    for p in qmodel.parameters():
        p.requires_grad_(False)
    seqs = seqs.to(next(qmodel.parameters()).device)
    mask = seqs != 0
    row_id = torch.full(mask.shape, -1, dtype=torch.long, device=seqs.device)
    row_id[mask] = torch.arange(int(mask.sum()), device=seqs.device)
    everything = list(quantizers(qmodel).values())
    with _disabled(q for q in everything if isinstance(q, AdaRoundQuantizer)):
        calibrate_activations(qmodel, seqs.split(CHUNK))
    qmodel.pos_emb.weight_quantizer.rounding = "nearest"
    settings = dict(iters=iters, batch_size=batch_size, lam=lam, lr=lr, warmup=warmup, beta=beta, schedule=schedule)

    units = []
    for name, layer in qmodel.named_modules():
        if isinstance(layer, QuantLinear):
            act = F.relu if name.endswith("ffn.fc1") else nn.Identity()
            units.append((name, layer.weight_quantizer, layer.weight, layer,
                          lambda x, layer=layer, act=act: act(F.linear(x, layer.weight, layer.bias)),
                          lambda x, layer=layer, act=act: act(F.linear(x, layer.weight_quantizer(layer.weight),
                                                                       layer.bias))))
    table, tq = qmodel.item_emb.weight, qmodel.item_emb.weight_quantizer
    units.append(("item_emb", tq, table, None, lambda h: h @ table[1:].T, lambda h: h @ tq(table)[1:].T))

    layers, snapshots = {}, []
    if progress:
        from tqdm.auto import tqdm
        units = tqdm(units, desc="AdaRound")
    for name, wq, weight, layer, fp_out, q_out in units:
        with _disabled(everything):
            x = _hidden(qmodel, seqs) if layer is None else _capture(qmodel, layer, seqs)
        with torch.no_grad():  # the input quantizer is fixed: apply it once
            xq = _hidden(qmodel, seqs) if layer is None else layer.input_quantizer(_capture(qmodel, layer, seqs))
        stats = _reconstruct(wq, fp_out, q_out, x[mask], xq[mask], row_id, gen,
                             max_rows=HEAD_ROWS if layer is None else None,
                             snapshots=snapshots if name == snapshot_layer else None, **settings)
        stats["changed_fraction"] = (wq.codes(weight) != wq.nearest_codes(weight)).float().mean().item()
        layers[name] = stats

    frozen = {id(p) for q in everything for p in q.parameters()}
    for p, flag in requires_grad.items():
        p.requires_grad_(flag and id(p) not in frozen)
    qmodel.train(was_training)
    report = {
        "layers": layers,
        "snapshots": {"layer": snapshot_layer, "at": [at for at, _ in snapshots], "h": [h for _, h in snapshots]},
        "position_table": "nearest",
        "config": dict(settings, weight_bits=weight_bits, act_bits=act_bits, embed_bits=embed_bits, grid=grid,
                       seed=seed, sequences=len(seqs)),
        "seconds": time.perf_counter() - start,
    }
    return qmodel, report
