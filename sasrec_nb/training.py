"""Training, evaluation and checkpoints.

``fit`` trains with Adam (Kingma & Ba 2015; the SASRec paper's optimizer) and stops early on the
validation NDCG@10 under full ranking, keeping the best weights. The loss is either the full softmax
cross-entropy over all items at every position (``ce``, default) or the paper's binary cross-entropy
with one sampled negative per position (``bce``, Kang & McAuley 2018 eq. 10).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import files, metrics
from .config import CHOICES, Profile
from .loaders import EvalSet, Split, train_loader
from .losses import softmax_cross_entropy


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def sequence_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: str = "ce",
                  generator: torch.Generator | None = None, teacher: nn.Module | None = None,
                  distill: float = 0.0) -> torch.Tensor:
    """Mean next-item loss over the labelled positions (target != 0); with a ``teacher`` (in eval mode) and weight
    ``distill``, the softmax loss is distilled from the teacher's scores of the same positions
    (:func:`sasrec_nb.losses.softmax_cross_entropy`)."""
    hidden = model(inputs)
    labelled = targets > 0
    h, t = hidden[labelled], targets[labelled]
    if loss == "ce":
        soft = None
        if teacher is not None:
            with torch.no_grad():
                soft = teacher.head_input(teacher(inputs)[labelled]), teacher.item_table()[1:]
        return softmax_cross_entropy(model.head_input(h), model.item_table()[1:], t - 1,  # = CE of model.logits(h)
                                     teacher=soft, alpha=distill if soft is not None else 0.0)
    if teacher is not None:
        raise ValueError("distillation is defined for the softmax loss ('ce'), not the sampled one ('bce')")
    if loss == "bce":
        neg = torch.randint(1, model.num_items + 1, t.shape, generator=generator).to(t.device)
        seen = (neg[:, None] == inputs[labelled.nonzero()[:, 0]]).any(1) | (neg == t)
        while seen.any():  # the reference draws negatives the user has not interacted with
            neg[seen] = torch.randint(1, model.num_items + 1, (int(seen.sum()),), generator=generator).to(t.device)
            seen = (neg[:, None] == inputs[labelled.nonzero()[:, 0]]).any(1) | (neg == t)
        table = model.item_table()
        pos_logit = (model.head_input(h) * table[t]).sum(-1)
        neg_logit = (model.head_input(h) * table[neg]).sum(-1)
        return F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
    raise ValueError(f"loss must be 'ce' or 'bce', got {loss!r}")


@torch.no_grad()
def evaluate(model: nn.Module, split: EvalSet, batch_size: int = 512, per_user: bool = False) -> dict:
    """Metrics under both protocols (``full`` and ``sampled100``) plus the loss of the target.

    ``model`` needs ``scores(seqs) -> [B, num_items + 1]``. With ``per_user`` the per-user NDCG@10
    of each protocol is returned too (for paired comparisons).
    """
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    dev = next((p.device for p in model.parameters()), torch.device("cpu")) if isinstance(model, nn.Module) \
        else torch.device("cpu")
    ranks = {p: [] for p in metrics.PROTOCOLS}
    nll = 0.0
    for start in range(0, len(split), batch_size):
        sl = slice(start, start + batch_size)
        scores = model.scores(split.inputs[sl].to(dev)).float().cpu()
        targets = split.targets[sl]
        nll += F.cross_entropy(scores[:, 1:], targets - 1, reduction="sum").item()
        ranks["full"].append(metrics.full_ranks(scores, targets, split.history[sl]))
        ranks["sampled100"].append(metrics.sampled_ranks(scores, targets, split.negatives[sl]))
    if isinstance(model, nn.Module):
        model.train(was_training)
    out: dict = {"n_users": len(split), "loss": nll / len(split)}
    for p, r in ranks.items():
        r = torch.cat(r)
        out[p] = metrics.summarize(r)
        if per_user:
            out.setdefault("per_user_ndcg@10", {})[p] = metrics.ndcg(r, 10)
    return out


class Popularity(nn.Module):
    """The popularity baseline: every user gets the items ranked by their training count."""

    def __init__(self, counts: torch.Tensor):
        super().__init__()
        self.register_buffer("counts", counts.float())

    def scores(self, seqs: torch.Tensor) -> torch.Tensor:
        s = self.counts.expand(len(seqs), -1).clone()
        s[:, 0] = float("-inf")
        return s


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, total_steps: int):
    """``constant``, or ``cosine``: the learning rate decays from its value to 0 over the run
    (Loshchilov & Hutter 2017, without restarts), which steadies the last epochs."""
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1))))
    raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {kind!r}")


def make_optimizers(groups: list[dict], lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """Adam (the SASRec paper's optimizer) for every group, except those marked ``optimizer="sgd"``
    (PACT's α, see :func:`sasrec_nb.quant.param_groups`), which get SGD with their own momentum."""
    adam = [g for g in groups if g.get("optimizer", "adam") == "adam"]
    sgd = [g for g in groups if g.get("optimizer", "adam") == "sgd"]
    unknown = [g.get("optimizer") for g in groups if g.get("optimizer", "adam") not in ("adam", "sgd")]
    if unknown:
        raise ValueError(f"parameter groups name unknown optimizers {unknown}: use 'adam' or 'sgd'")
    out: list[torch.optim.Optimizer] = [torch.optim.Adam(adam, lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)]
    if sgd:
        out.append(torch.optim.SGD(sgd, lr=lr))
    return out


def fit(
    model: nn.Module,
    split: Split,
    profile: Profile,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    param_groups: list[dict] | None = None,
    patience: int | None = None,
    eval_every: int | None = None,
    progress: bool | None = None,
    schedule: str | None = None,
    windows: str | None = None,
    on_epoch=None,
    resume: Path | None = None,
    teacher: nn.Module | None = None,
    distill: float = 0.0,
) -> dict:
    """Train ``model`` on ``split.train``; returns the history and leaves the best weights loaded.

    ``param_groups`` (e.g. from :func:`sasrec_nb.quant.param_groups`) replace the single group, so QAT
    can give quantizer parameters their own learning rate; ``schedule`` and ``windows`` override the
    profile's (QAT fine-tunes with a cosine decay, on ``profile.qat_windows``). ``on_epoch(epoch, model)``
    is called after every epoch (QAT notebooks record scales there). With a ``teacher`` (the FP32 model a QAT run
    starts from) the loss is distilled from its scores with weight ``distill`` (:func:`sequence_loss`).

    With ``resume`` (a file path) the whole training state is saved there after every validation and a run
    that finds the file continues from it, reaching exactly the weights and history of an uninterrupted run
    (the full profile's FP32 run takes over an hour on a laptop). The file is removed when the run ends.
    """
    epochs = profile.epochs if epochs is None else epochs
    patience = profile.patience if patience is None else patience
    eval_every = profile.eval_every if eval_every is None else eval_every
    progress = profile.progress if progress is None else progress
    for name, value in (("epochs", epochs), ("patience", patience), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"fit: {name} must be a whole number of at least 1, got {value!r}")
    for name, value in (("schedule", schedule), ("windows", windows)):
        allowed = CHOICES["lr_schedule" if name == "schedule" else "train_windows"]
        if value is not None and value not in allowed:
            raise ValueError(f"fit: {name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    if (teacher is None) != (distill == 0.0):
        raise ValueError(f"fit: distillation needs a teacher and a weight in (0, 1], got {distill!r}")
    if teacher is not None:
        teacher.eval()
    dev = next(model.parameters()).device
    seed_everything(profile.seed)
    loader = train_loader(split, profile.batch_size, profile.seed, windows or profile.train_windows)
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    optimizers = make_optimizers(groups, profile.lr if lr is None else lr, profile.weight_decay)
    schedulers = [lr_schedule(o, schedule or profile.lr_schedule, epochs * len(loader)) for o in optimizers]
    gen = torch.Generator().manual_seed(profile.seed)
    history: dict = {"epochs": [], "best_epoch": None, "stopped_early": False}
    best, best_state, bad = -math.inf, None, 0
    run = {"profile": profile.to_dict(), "epochs": epochs, "lr": lr, "patience": patience, "eval_every": eval_every,
           "schedule": schedule, "windows": windows}
    first, elapsed = 1, 0.0
    if resume is not None and Path(resume).exists():
        state = read_training_state(Path(resume), run)
        load_into(model, state["model"], f"training state {resume}")
        for obj, saved in zip(optimizers + schedulers, state["optimizers"] + state["schedulers"]):
            obj.load_state_dict(saved)
        torch.set_rng_state(state["rng"])
        gen.set_state(state["gen"])
        loader.generator.set_state(state["loader_gen"])
        history, best, best_state, bad = state["history"], state["best"], state["best_state"], state["bad"]
        first, elapsed = state["epoch"] + 1, state["elapsed"]
        if bad >= patience:  # stopped right after its last save
            first, history["stopped_early"] = epochs + 1, True
        if progress:
            tqdm.write(f"resuming from epoch {state['epoch']} ({resume}; delete it to start over)")
    started = time.perf_counter() - elapsed
    for epoch in range(first, epochs + 1):
        model.train()
        t0, total, steps = time.perf_counter(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress)
        for inputs, targets in bar:
            loss = sequence_loss(model, inputs.to(dev), targets.to(dev), profile.loss, gen, teacher, distill)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, scheduler in zip(optimizers, schedulers):
                optimizer.step()
                scheduler.step()
            total, steps = total + loss.item(), steps + 1
        row = {"epoch": epoch, "train_loss": total / max(steps, 1), "seconds": time.perf_counter() - t0}
        if epoch % eval_every == 0 or epoch == epochs:
            valid = evaluate(model, split.valid, profile.eval_batch_size)
            row.update(valid_loss=valid["loss"], **{k: v for k, v in valid["full"].items()},
                       sampled100_ndcg10=valid["sampled100"]["ndcg@10"])
            if valid["full"]["ndcg@10"] > best + profile.min_delta:
                best, bad, history["best_epoch"] = valid["full"]["ndcg@10"], 0, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            if progress:
                tqdm.write(f"epoch {epoch}: train loss {row['train_loss']:.4f} · valid NDCG@10 {row['ndcg@10']:.4f} "
                           f"(full), {row['sampled100_ndcg10']:.4f} (sampled100)")
        history["epochs"].append(row)
        if resume is not None and "ndcg@10" in row:
            save_training_state(Path(resume), {
                "run": run, "epoch": epoch, "elapsed": time.perf_counter() - started, "model": model.state_dict(),
                "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
                "rng": torch.get_rng_state(), "gen": gen.get_state(), "loader_gen": loader.generator.get_state(),
                "history": history, "best": best, "best_state": best_state, "bad": bad})
        if on_epoch is not None:
            on_epoch(epoch, model)
        if bad >= patience:
            history["stopped_early"] = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history["train_seconds"] = time.perf_counter() - started
    history["seconds_per_epoch"] = sum(r["seconds"] for r in history["epochs"]) / len(history["epochs"])
    if resume is not None:
        Path(resume).unlink(missing_ok=True)
    return history


def save_training_state(path: Path, state: dict) -> None:
    """Everything :func:`fit` needs to continue a run (weights, optimizers, random states, history), atomically."""
    with files.atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_training_state(path: Path, run: dict) -> dict:
    """A state saved by :func:`fit` for the same run settings (``weights_only``); a clear error otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path} is not a readable training state ({type(e).__name__}); delete it to "
                           "train from the start") from e
    if not isinstance(state, dict) or "run" not in state:
        raise RuntimeError(f"{path} is not a training state saved by fit; delete it to train from the start")
    if state["run"] != run:
        changed = sorted(k for k in set(run) | set(state["run"]) if run.get(k) != state["run"].get(k))
        raise RuntimeError(f"{path} holds a run with other settings ({', '.join(changed)} differ); delete it to "
                           "train from the start, or restore the settings it was saved with")
    return state


# -- checkpoints -----------------------------------------------------------------------------------
CHECKPOINT_KEYS = ("state_dict", "config", "quant_config", "meta")


def save_checkpoint(path: Path, model: nn.Module, meta: dict | None = None) -> None:
    """State dict + the model's config (+ quantization config) in one file, loadable with weights_only.

    Written to a temporary file and renamed, so an interrupted save never leaves a truncated checkpoint."""
    with files.atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "config": dict(model.config),
                    "quant_config": getattr(model, "quant_config", None), "meta": meta or {}}, tmp)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`save_checkpoint` (``torch.load(..., weights_only=True)``)."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); "
                           "delete it to rebuild") from e
    if not isinstance(ckpt, dict) or not set(CHECKPOINT_KEYS) <= set(ckpt):
        found = f"keys {', '.join(map(str, list(ckpt)[:5]))}…" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise RuntimeError(f"{path} is not a checkpoint of this package: expected a dict with "
                           f"{', '.join(CHECKPOINT_KEYS)} (as save_checkpoint writes), found {found}. A plain state "
                           "dict loads with training.load_into(model, torch.load(path, weights_only=True)); "
                           "otherwise delete the file to rebuild it")
    return ckpt


def load_into(model: nn.Module, state: dict, source: str = "checkpoint") -> nn.Module:
    """Load a state dict, raising an error that lists every missing, unexpected or reshaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"the {source} does not fit the model:"]
        if shapes:
            lines += ["  shape differs  " + s for s in shapes[:10]]
        if missing:
            lines.append(f"  missing in checkpoint ({len(missing)}): {', '.join(missing[:8])}")
        if unexpected:
            lines.append(f"  not in model ({len(unexpected)}): {', '.join(unexpected[:8])}")
        lines.append("  build the model with the checkpoint's config (its 'config' entry), or retrain")
        raise ValueError("\n".join(lines))
    model.load_state_dict(state)
    return model
