"""The course's cached runs: FP32, QAT per method, AdaRound.

A notebook asks for what it needs (``fp32_model(profile)``, ``qat_model(profile, "lsq", 4, 8)``) and gets
the cached model from ``checkpoints/<dataset>/<profile>/<run>.pt`` (+ ``.json`` history), or the run is
done and cached there first. The checkpoint folder is git-ignored (``$SASREC_NB_CHECKPOINTS`` moves it), so
running the notebooks never changes a tracked file. The results of record under ``results/`` are written
only by ``python -m sasrec_nb.train`` (:mod:`sasrec_nb.train`), from these same runs.
"""
from __future__ import annotations

import copy
import hashlib
import shutil
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from . import files
from .config import (Profile, changed_settings, checkpoint_dir, device, project_root, qat_recipe, results_dir,
                     run_fields)
from .data import REGISTRY, dataset_slug, load_dataset
from .loaders import Split, calibration_sequences, leave_one_out
from .model import SASRec
from .quant import METHODS, calibrate_activations, check_bits, param_groups, quantize_model, quantizers, ranges
from .trace import PROBE_SEQUENCES, QuantizerTrace
from .training import fit, load_into, read_checkpoint, save_checkpoint, seed_everything

#: the methods :func:`qat_model` trains (AdaRound is post-training: :func:`adaround_model`)
QAT_METHODS = tuple(m for m in METHODS if m != "adaround")
#: round-to-nearest post-training baselines (:func:`ptq_model`) and the range rule that sets all their grids
PTQ_BASELINES = {"rtn_absmax": "absmax", "rtn_mse": "mse"}
#: the control run (:func:`finetuned_fp32`): the FP32 model fine-tuned with QAT's recipe and no quantizer
FINETUNED = "fp32_ft"


@lru_cache(maxsize=4)
def _split(dataset: str, max_len: int, num_negatives: int, seed: int) -> Split:
    return leave_one_out(load_dataset(dataset), max_len, num_negatives, seed)


def load_split(profile: Profile) -> Split:
    """The leave-one-out split of the profile's dataset (cached per process)."""
    return _split(profile.dataset, profile.max_len, profile.num_negatives, profile.seed)


def run_name(method: str, weight_bits: int | None, act_bits: int | None, embed_bits: int = 8,
             seed: int | None = None, qat_lr: float | None = None) -> str:
    """``fp32``, ``fp32_ft[_lr<rate>][_seed<n>]`` (the control, no bits; the rate when it is not the profile's
    ``qat_lr``), or ``<method>_w<bits>[e<bits>]a<bits>[_seed<n>]``: the item and position tables' bits appear when
    they are not 8 (where the tables stay by default), the seed when the run does not use the profile's own."""
    if method == "fp32":
        return "fp32"
    if method == FINETUNED:
        rate = f"_lr{qat_lr:g}" if qat_lr is not None else ""
        return FINETUNED + rate + (f"_seed{seed}" if seed is not None else "")
    tables = f"e{embed_bits}" if embed_bits != 8 else ""
    return f"{method}_w{weight_bits}{tables}a{act_bits}" + (f"_seed{seed}" if seed is not None else "")


def check_seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"a run's seed is a whole number ≥ 0 (or None for the profile's), got {seed!r}")


def dataset_label(dataset: str) -> str:
    spec = REGISTRY.get(dataset)
    return spec.label if spec and spec.label else dataset_slug(dataset)


def shown(path: Path) -> Path:
    """``path`` relative to the project, for messages without machine paths."""
    return path.relative_to(project_root()) if path.is_relative_to(project_root()) else path


def resolve_bits(profile: Profile, method: str, weight_bits: int | None, act_bits: int | None) -> tuple[int, int]:
    """The bit widths a run uses (the profile's where None), checked against ``method`` before any work."""
    wb = profile.weight_bits if weight_bits is None else weight_bits
    ab = profile.act_bits if act_bits is None else act_bits
    check_bits(method, wb, ab, profile.embed_bits)
    return wb, ab


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A short sha256 of a state dict's names and values."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def start_of(fp32: nn.Module, method: str) -> dict:
    """What a quantized run starts from, kept in its checkpoint and checked when it is loaded: a digest of the FP32
    weights and, for a method whose activation grids stay fixed, the range rule that sets them (``ranges.DEFAULT``);
    for AdaRound also the grids of its residual branches (per dimension or per tensor)."""
    from .quant import adaround

    start = {"fp32": weights_digest(fp32.state_dict()), "act_range_rule": ranges.DEFAULT.get(method)}
    if method == "adaround":
        start["residual_grid"] = adaround.RESIDUAL_GRID
    return start


def cached_checkpoint(path: Path, profile: Profile, method: str, force: bool,
                      start: dict | None = None) -> dict | None:
    """The checkpoint at ``path`` (None when absent or ``force``); an error when it was trained with other settings
    or, for a quantized run, from another ``start`` (:func:`start_of`: other FP32 weights or another range rule).

    The checkpoint records the profile it was trained with; :func:`config.run_fields` names the fields that matter.
    """
    if force or not path.exists():
        return None
    ckpt = read_checkpoint(path)
    changed = changed_settings(ckpt["meta"].get("profile", {}), profile, run_fields(method))
    redo = f"\n  retrain it (python -m sasrec_nb.train --profile {profile.name} --force ...) or delete it"
    if changed:
        raise ValueError(f"{shown(path)} was trained with other settings than the {profile.name!r} profile has now:\n  "
                         + "\n  ".join(changed) + redo)
    if start is not None and ckpt["meta"].get("start") != start:
        raise ValueError(f"{shown(path)} was trained from another starting point than the FP32 checkpoint and range "
                         f"rules of now (recorded {ckpt['meta'].get('start')}, now {start}){redo}")
    return ckpt


def new_model(profile: Profile, split: Split) -> SASRec:
    seed_everything(profile.seed)
    return SASRec(split.num_items, **profile.model_kwargs()).to(device())


def fp32_record_path(profile: Profile) -> Path:
    """Where a profile with ``fp32_of_record`` keeps its FP32 checkpoint beside its results (committed)."""
    return results_dir(profile) / "fp32.pt"


def seed_cache_from_record(profile: Profile, path: Path) -> None:
    """Copy the committed FP32 weights of record into the checkpoint cache at ``path``, after checking that they are
    the weights ``fp32.json`` of the results reports (its ``start.fp32`` digest)."""
    record = fp32_record_path(profile)
    result = results_dir(profile) / "fp32.json"
    recorded = files.read_json(result).get("start", {}).get("fp32") if result.exists() else None
    digest = weights_digest(read_checkpoint(record)["state_dict"])
    if recorded != digest:
        raise ValueError(f"{shown(record)} holds FP32 weights with digest {digest}, but {shown(result)} reports "
                         f"{recorded}: the two were not written by one run. Restore both from git, or retrain "
                         f"(python -m sasrec_nb.train --method fp32 --profile {profile.name} --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(record, path)


def keep_fp32_of_record(profile: Profile) -> None:
    """Copy the profile's cached FP32 checkpoint beside its results, when the profile keeps one (``fp32_of_record``)."""
    if profile.fp32_of_record:
        fp32_record_path(profile).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint_dir(profile) / "fp32.pt", fp32_record_path(profile))


def fp32_model(profile: Profile, force: bool = False) -> tuple[SASRec, dict]:
    """The FP32 SASRec of the profile (in eval mode): loaded from its checkpoint, or trained (and cached) first. A
    profile with ``fp32_of_record`` fills an empty cache from the committed weights of record instead of training."""
    split = load_split(profile)
    path = checkpoint_dir(profile) / "fp32.pt"
    model = new_model(profile, split)
    if profile.fp32_of_record and not force and not path.exists() and fp32_record_path(profile).exists():
        seed_cache_from_record(profile, path)
    ckpt = cached_checkpoint(path, profile, "fp32", force)
    if ckpt is not None:
        load_into(model, ckpt["state_dict"], str(shown(path)))
        return model.eval(), ckpt["meta"].get("history", {})
    history = fit(model, split, profile, resume=path.with_suffix(".resume.pt"))  # a stopped run continues
    save_checkpoint(path, model, {"profile": profile.to_dict(), "history": history})
    files.write_json(path.with_suffix(".json"), history)
    return model.eval(), history


def cached_fp32_digest(profile: Profile) -> str | None:
    """The digest (:func:`start_of`) of the profile's cached FP32 weights, None when none is cached."""
    path = checkpoint_dir(profile) / "fp32.pt"
    return weights_digest(read_checkpoint(path)["state_dict"]) if path.exists() else None


def starting_point(profile: Profile) -> tuple[Split, SASRec, torch.Tensor]:
    """What every quantized run starts from: the split, the FP32 model (trained first if missing) and the
    calibration sequences (the same ``calib_sequences`` training windows for every run of the profile)."""
    split = load_split(profile)
    fp32, _ = fp32_model(profile)
    return split, fp32, calibration_sequences(split, profile.calib_sequences, profile.seed)


def qat_model(profile: Profile, method: str, weight_bits: int | None = None, act_bits: int | None = None,
              force: bool = False, seed: int | None = None) -> tuple[nn.Module, dict]:
    """A QAT model fine-tuned from the FP32 checkpoint, cached like the FP32 one.

    ``seed`` (default: the profile's) seeds the fine-tuning only (batch order, dropout): every seed starts from the
    same FP32 model and the same calibration, so seeds measure what QAT itself varies. The rate is the profile's
    for the run's bit widths (:func:`sasrec_nb.config.qat_recipe`).

    Returns the model, in eval mode, and its history (with ``quantizer_scales`` per epoch). AdaRound is not QAT:
    use :func:`adaround_model`.
    """
    if method not in QAT_METHODS:
        hint = "; AdaRound is post-training quantization: use adaround_model(profile, ...)" \
            if method == "adaround" else ""
        raise ValueError(f"qat_model trains one of {', '.join(QAT_METHODS)}, not {method!r}{hint}")
    wb, ab = resolve_bits(profile, method, weight_bits, act_bits)
    check_seed(seed)
    profile = qat_recipe(profile, wb)
    seed = None if seed == profile.seed else seed  # the profile's own seed is the run without a seed in its name
    split, fp32, calib = starting_point(profile)
    qmodel = quantize_model(fp32, method, wb, ab, profile.embed_bits)
    path = checkpoint_dir(profile) / f"{run_name(method, wb, ab, profile.embed_bits, seed)}.pt"
    start = start_of(fp32, method)
    ckpt = cached_checkpoint(path, profile, method, force, start)
    if ckpt is not None:
        for q in quantizers(qmodel).values():
            q.initialized.fill_(True)
        load_into(qmodel, ckpt["state_dict"], str(shown(path)))
        return qmodel.eval(), ckpt["meta"].get("history", {})
    history = train_qat(qmodel, split, profile if seed is None else replace(profile, seed=seed), calib, fp32)
    save_checkpoint(path, qmodel, {"profile": profile.to_dict(), "history": history, "start": start})
    files.write_json(path.with_suffix(".json"), history)
    return qmodel.eval(), history


def train_qat(qmodel: nn.Module, split: Split, profile: Profile, calib, fp32: nn.Module | None = None) -> dict:
    """Calibrate the activation grids of a freshly quantized model, then fine-tune it (:func:`fine_tune`); the history
    holds ``quantizer_scales`` and ``quantizer_stats`` per epoch."""
    if profile.qat_distill > 0 and fp32 is None:
        raise ValueError(f"qat_distill {profile.qat_distill} needs the FP32 model the run starts from (fp32=...)")
    calibrate_activations(qmodel, calib.split(256))
    trace = QuantizerTrace(qmodel, calib[:PROBE_SEQUENCES])
    history = fine_tune(qmodel, split, profile, fp32, on_epoch=trace)
    history["quantizer_scales"], history["quantizer_stats"] = trace.scales, trace.stats
    return history


def fine_tune(model: nn.Module, split: Split, profile: Profile, fp32: nn.Module | None = None, on_epoch=None) -> dict:
    """QAT's recipe: ``qat_epochs`` with the task loss at ``qat_lr`` (cosine decay) on ``qat_windows``, quantizer
    parameters in groups of their own, distilled from the ``fp32`` model it started from when ``profile.qat_distill``
    > 0. The model keeps its best-validation epoch; returns the history."""
    groups = param_groups(model, profile.qat_lr, profile.weight_decay, profile.quant_lr)
    return fit(model, split, profile, epochs=profile.qat_epochs, lr=profile.qat_lr,
               param_groups=groups, eval_every=1, patience=max(2, profile.patience), schedule="cosine",
               windows=profile.qat_windows, on_epoch=on_epoch,
               teacher=fp32 if profile.qat_distill > 0 else None, distill=profile.qat_distill)


def finetuned_fp32(profile: Profile, force: bool = False, seed: int | None = None,
                   qat_lr: float | None = None) -> tuple[nn.Module, dict]:
    """The control of every QAT row: the FP32 checkpoint fine-tuned with QAT's recipe (:func:`fine_tune`, same
    epochs, rate, windows and seed) and no quantizer, cached like a QAT run. A QAT row measures quantization plus
    this extra training; the control measures the extra training alone. ``qat_lr`` (default: the profile's) is the
    rate of the QAT rows it stands beside, e.g. ``profile.qat_lr_low_bits`` (:func:`config.qat_recipe`); a rate other
    than the profile's ``qat_lr`` is part of the run's name. Returns the model (eval mode) and its history."""
    check_seed(seed)
    seed = None if seed == profile.seed else seed
    qat_lr = None if qat_lr == profile.qat_lr else qat_lr
    recipe = profile if qat_lr is None else replace(profile, qat_lr=qat_lr)
    split, fp32, _ = starting_point(profile)
    model = copy.deepcopy(fp32)
    path = checkpoint_dir(profile) / f"{run_name(FINETUNED, None, None, seed=seed, qat_lr=qat_lr)}.pt"
    start = start_of(fp32, FINETUNED)
    ckpt = cached_checkpoint(path, recipe, FINETUNED, force, start)
    if ckpt is not None:
        load_into(model, ckpt["state_dict"], str(shown(path)))
        return model.eval(), ckpt["meta"].get("history", {})
    history = fine_tune(model, split, recipe if seed is None else replace(recipe, seed=seed), fp32)
    save_checkpoint(path, model, {"profile": recipe.to_dict(), "history": history, "start": start})
    return model.eval(), history


def ptq_model(profile: Profile, baseline: str, weight_bits: int | None = None,
              act_bits: int | None = None) -> tuple[nn.Module, dict]:
    """Round-to-nearest post-training quantization of the FP32 checkpoint, the baseline QAT has to beat: uniform
    symmetric grids (the STE quantizer's) whose range is set by the baseline's rule (:data:`PTQ_BASELINES`), per
    output row for weights and tables and per tensor on the calibration sequences for activations, then nothing is
    trained. Seconds of work, so it is not cached; returns the model (eval mode) and ``{"seconds": …}``."""
    if baseline not in PTQ_BASELINES:
        raise ValueError(f"unknown post-training baseline {baseline!r}: use one of {', '.join(PTQ_BASELINES)}")
    wb, ab = resolve_bits(profile, "ste", weight_bits, act_bits)
    split, fp32, calib = starting_point(profile)
    started = time.perf_counter()
    qmodel = quantize_model(fp32, "ste", wb, ab, profile.embed_bits, range_rule=PTQ_BASELINES[baseline])
    calibrate_activations(qmodel, calib.split(256))
    return qmodel.eval(), {"seconds": time.perf_counter() - started}


def adaround_model(profile: Profile, weight_bits: int | None = None, act_bits: int | None = None,
                   force: bool = False, seed: int | None = None) -> tuple[nn.Module, dict]:
    """AdaRound post-training quantization of the FP32 checkpoint (no labels, no task loss), in eval mode;
    ``seed`` (default: the profile's) draws its mini-batches of calibration sequences.

    Returns the model and the calibration report (its ``seconds`` is the calibration time)."""
    from .quant import adaround

    wb, ab = resolve_bits(profile, "adaround", weight_bits, act_bits)
    check_seed(seed)
    seed = None if seed == profile.seed else seed
    split, fp32, calib = starting_point(profile)
    path = checkpoint_dir(profile) / f"{run_name('adaround', wb, ab, profile.embed_bits, seed)}.pt"
    start = start_of(fp32, "adaround")
    ckpt = cached_checkpoint(path, profile, "adaround", force, start)
    if ckpt is not None:
        qmodel = adaround.from_state(fp32, ckpt["state_dict"], wb, ab, profile.embed_bits,
                                     residual_grid=start["residual_grid"])
        return qmodel.eval(), ckpt["meta"].get("report", {})
    qmodel, report = adaround.calibrate(fp32, calib, weight_bits=wb, act_bits=ab, embed_bits=profile.embed_bits,
                                        iters=profile.adaround_iters, lr=profile.adaround_lr,
                                        seed=profile.seed if seed is None else seed,
                                        residual_grid=start["residual_grid"], progress=profile.progress)
    save_checkpoint(path, qmodel, {"profile": profile.to_dict(), "report": report, "start": start})
    return qmodel.eval(), report
