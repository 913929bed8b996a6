"""``python -m sasrec_nb.train``: the command that makes the results of record.

It trains (or loads from the cache) the FP32 model and the QAT / AdaRound runs asked for, and writes one
``results/<dataset>/<profile>/<run>.json`` per run (DESIGN §6): test metrics under both protocols, the
paired difference to FP32, size, cost and the command. Nothing else writes there, so executing the
notebooks leaves every tracked file as it was. Every argument is checked before anything loads or trains.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import experiments, files, grid, metrics
from .config import PROFILES, Profile, changed_settings, get_profile, qat_recipe, results_dir, run_fields
from .experiments import (FINETUNED, PTQ_BASELINES, QAT_METHODS, adaround_model, dataset_label, finetuned_fp32,
                          fp32_model, ptq_model, qat_model, shown)
from .grid import Run
from .loaders import Split
from .machine import cpu_model, isa_flags
from .quant import METHODS
from .quant.export import model_bytes
from .training import evaluate


def command_line() -> str:
    """How this run was started, without machine paths."""
    return "python -m sasrec_nb.train " + " ".join(sys.argv[1:])


def record(profile: Profile, run: str, method: str, weight_bits: int | None, act_bits: int | None,
           model: nn.Module, split: Split, history: dict, baseline: nn.Module | None = None,
           seed: int | None = None, ptq: dict[str, nn.Module] | None = None) -> dict:
    """The results JSON of a run (DESIGN §6), with paired differences against the FP32 ``baseline`` and, for a QAT
    run, against each post-training model of the same bit widths (``ptq``: ``vs_ptq``), on the same users.

    ``settings`` records the profile fields the run depends on, so a later profile change is detected; ``start`` the
    FP32 weights it started from (a digest, :func:`experiments.start_of`; an FP32 run's own), so that a results table
    can be checked to come from one FP32 model.
    """
    test = evaluate(model, split.test, profile.eval_batch_size, per_user=True)
    out = {
        "run": run, "method": method, "weight_bits": weight_bits, "act_bits": act_bits,
        "settings": {k: getattr(profile, k) for k in run_fields(method)},
        "start": experiments.start_of(model if baseline is None else baseline, method),
        "embed_bits": None if method in ("fp32", FINETUNED) else profile.embed_bits,
        "seed": None if method == "fp32" or method in PTQ_BASELINES else profile.seed if seed is None else seed,
        "dataset": dataset_label(profile.dataset), "profile": profile.name,
        "test": {p: test[p] for p in metrics.PROTOCOLS}, "n_users": test["n_users"],
        "model_bytes": model_bytes(model),
        "train_seconds": round(history.get("train_seconds", history.get("seconds", 0.0)), 2),
        "seconds_per_epoch": round(history.get("seconds_per_epoch", 0.0), 3),
        "epochs": len(history.get("epochs", [])), "best_epoch": history.get("best_epoch"),
        "device": str(next(model.parameters()).device), "cpu": cpu_model(), "isa": isa_flags(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "command": command_line(),
    }
    if baseline is not None:
        base = evaluate(baseline, split.test, profile.eval_batch_size, per_user=True)
        out["vs_fp32"] = {}
        for p in metrics.PROTOCOLS:
            a, b = base["per_user_ndcg@10"][p], test["per_user_ndcg@10"][p]
            out["vs_fp32"][p] = {"fp32_ndcg@10": a.mean().item(), "ratio": b.mean().item() / a.mean().item(),
                                 "diff_ndcg@10": metrics.paired_difference(a, b)}
    for name, other in (ptq or {}).items():
        base = evaluate(other, split.test, profile.eval_batch_size, per_user=True)["per_user_ndcg@10"]
        out.setdefault("vs_ptq", {})[name] = {
            p: {"ptq_ndcg@10": base[p].mean().item(),
                "diff_ndcg@10": metrics.paired_difference(base[p], test["per_user_ndcg@10"][p])}
            for p in metrics.PROTOCOLS}
    return out


def stale_result(path, profile: Profile, method: str, fp32_digest: str | None = None) -> str | None:
    """Why the results file at ``path`` does not belong to the profile as it is now (None when it does): other
    settings, or (when both are known) another FP32 start than the cached FP32 model's digest ``fp32_digest``."""
    result = files.read_json(path)
    saved = result.get("settings")
    if saved is None:
        return f"{shown(path)} does not record the settings it was produced with (an older version wrote it)"
    changed = changed_settings(saved, profile, run_fields(method))
    if changed:
        return (f"{shown(path)} was produced with other settings than the {profile.name!r} profile has now:\n  "
                + "\n  ".join(changed))
    recorded = result.get("start", {}).get("fp32")
    if fp32_digest is not None and recorded is not None and recorded != fp32_digest:
        return (f"{shown(path)} started from other FP32 weights (digest {recorded}) than the cached FP32 model "
                f"({fp32_digest}): a table mixing the two would not come from one FP32 model")
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sasrec_nb.train", description=main.__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--all", action="store_true",
                      help="the comparison grid (sasrec_nb.grid): FP32, every method and the round-to-nearest "
                           "baselines with weights and tables at 8, 4, 3, 2 bits, then activation bits; seeds at "
                           "4 bits and below")
    what.add_argument("--method", nargs="+", choices=("fp32", FINETUNED) + METHODS + tuple(PTQ_BASELINES),
                      help="one or more methods or round-to-nearest post-training baselines (FP32 is trained first "
                           f"if missing); {FINETUNED} is the control, FP32 fine-tuned with QAT's recipe and no "
                           "quantizer")
    parser.add_argument("--bits", type=int, nargs="+", default=None, help="weight bit widths (default: 8 4)")
    parser.add_argument("--act-bits", type=int, default=8)
    parser.add_argument("--embed-bits", type=int, default=None,
                        help="bits of the item and position tables (default: the profile's, 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="QAT / AdaRound / control seeds, one run each from the same FP32 model (default: the "
                             "profile's)")
    parser.add_argument("--profile", choices=list(PROFILES), default=None, help="default: $SASREC_NB_PROFILE or quick")
    parser.add_argument("--dataset", default=None, help="a registered dataset or the path of a SASRec text file")
    parser.add_argument("--force", action="store_true",
                        help="retrain runs whose results exist (FP32 only with --all or --method fp32: every "
                             "other run starts from it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train FP32 and the QAT methods (or load them from the cache); write the results of record."""
    args = parse_args(argv)
    if args.dataset:
        os.environ["SASREC_NB_DATASET"] = args.dataset
    try:
        profile = get_profile(args.profile)
        if args.all and (args.bits or args.embed_bits is not None or args.seeds or args.act_bits != 8):
            raise ValueError("--all runs the whole grid (sasrec_nb.grid); --bits, --act-bits, --embed-bits and "
                             "--seeds go with --method")
        unseeded = [m for m in args.method or [] if not grid.seeded(m)]
        if args.seeds is not None and unseeded:
            raise ValueError(f"--seeds applies to QAT and AdaRound runs, not {', '.join(unseeded)} (the FP32 model "
                             "uses the profile's seed; round to nearest has no randomness)")
        runs = grid.grid_runs(profile) if args.all else grid.method_runs(
            args.method, args.bits or [8, 4], args.act_bits,
            profile.embed_bits if args.embed_bits is None else args.embed_bits, args.seeds, profile)
        for run in runs[1:]:  # every bit width and seed is checked before anything loads or trains
            check_run(profile, run)
        experiments.load_split(profile)  # a missing or bad data file fails here, before any training
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"profile {profile.name} · dataset {dataset_label(profile.dataset)} · device {experiments.device()} · "
          f"{len(runs)} runs", flush=True)
    for run in runs:
        run_profile = profile_of(profile, run)
        result = result_path(profile, run)
        force = args.force and (run.method != "fp32" or args.all or "fp32" in args.method)
        if result.exists() and not force:
            try:
                stale = stale_result(result, run_profile, run.method, experiments.cached_fp32_digest(profile))
            except ValueError as e:  # a corrupt or truncated results file
                raise SystemExit(f"error: {e}") from None
            if stale:
                raise SystemExit(f"{stale}\n  redo it with --force (FP32 is redone only with --all or --method fp32)")
            print(f"  {run.name}: results exist ({shown(result)}); --force to redo")
            continue
        started = time.perf_counter()
        files.write_json(result, run_and_record(profile, run, force))
        print(f"  {run.name}: done in {time.perf_counter() - started:.0f} s -> {shown(result)}", flush=True)
    return 0


def profile_of(profile: Profile, run: Run) -> Profile:
    """The profile a run trains with: the run's table bits and, for a QAT run, the rate of its bit widths
    (:func:`sasrec_nb.config.qat_recipe`; the control: its own rate), so that its results record the settings it was
    trained with."""
    if run.method == FINETUNED and run.qat_lr is not None:
        return replace(profile, qat_lr=run.qat_lr)
    if run.embed_bits is None:
        return profile
    tables = replace(profile, embed_bits=run.embed_bits)
    return qat_recipe(tables, run.weight_bits) if run.method in QAT_METHODS else tables


def result_path(profile: Profile, run: Run) -> Path:
    """Where a run's results JSON goes: the profile's results folder, the fine-tuning control in its ``controls/``
    (it is not a row of the grid)."""
    folder = results_dir(profile)
    return (folder / "controls" if run.method == FINETUNED else folder) / f"{run.name}.json"


def check_run(profile: Profile, run: Run) -> None:
    """The run's bit widths (tables included) and seed, checked before anything loads or trains."""
    experiments.check_seed(run.seed)
    if run.method == FINETUNED:
        return
    run_profile = replace(profile, embed_bits=run.embed_bits)
    experiments.resolve_bits(run_profile, "ste" if run.method in PTQ_BASELINES else run.method, run.weight_bits,
                             run.act_bits)


def run_and_record(base: Profile, run: Run, force: bool) -> dict:
    """The run (trained, or loaded when its checkpoint is cached) and its results JSON; ``base`` is the CLI's profile,
    the run's table bits and rate are applied here (:func:`profile_of`)."""
    split = experiments.load_split(base)
    method, wb, ab = run.method, run.weight_bits, run.act_bits
    if method == "fp32":
        model, history = fp32_model(base, force=force)
        experiments.keep_fp32_of_record(base)
        return record(base, "fp32", "fp32", None, None, model, split, history)
    fp32, _ = fp32_model(base)
    if method == FINETUNED:
        model, history = finetuned_fp32(base, force=force, seed=run.seed, qat_lr=run.qat_lr)
        return record(profile_of(base, run), run.name, method, None, None, model, split, history, baseline=fp32,
                      seed=run.seed)
    profile = profile_of(base, run)
    if method in PTQ_BASELINES:
        model, history = ptq_model(profile, method, wb, ab)
    elif method == "adaround":
        model, history = adaround_model(profile, wb, ab, force=force, seed=run.seed)
    else:
        model, history = qat_model(profile, method, wb, ab, force=force, seed=run.seed)
        ptq = {b: ptq_model(profile, b, wb, ab)[0] for b in PTQ_BASELINES}
        ptq["adaround"] = adaround_model(profile, wb, ab)[0]  # the profile's seed, cached
        return record(profile, run.name, method, wb, ab, model, split, history, baseline=fp32, seed=run.seed, ptq=ptq)
    return record(profile, run.name, method, wb, ab, model, split, history, baseline=fp32, seed=run.seed)


if __name__ == "__main__":
    sys.exit(main())
