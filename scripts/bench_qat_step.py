"""Cost of one fake-quant training step against an FP32 step, per method (issue: QAT step ≤ 2× FP32).

    python scripts/bench_qat_step.py [--profile quick] [--threads 2] [--out results/bench/qat_step.json]

Times forward + backward + Adam step on real training batches of the profile's data, for FP32 and
every QAT method at W8A8, the models taking turns (``--rounds`` rounds of ``--steps`` steps each, after
warm-up; the median step per model), and writes JSON with the machine, threads and command. Random
initial weights suffice: the cost does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sasrec_nb import files  # noqa: E402

from sasrec_nb.config import get_profile  # noqa: E402
from sasrec_nb.experiments import load_split, new_model  # noqa: E402
from sasrec_nb.machine import machine_info  # noqa: E402
from sasrec_nb.loaders import calibration_sequences, train_loader  # noqa: E402
from sasrec_nb.quant import param_groups, quantize_model  # noqa: E402
from sasrec_nb.training import sequence_loss  # noqa: E402

METHODS = ("ste", "lsq", "pact", "dorefa", "apot")  # AdaRound has no training step (it is PTQ)


class Stepper:
    """One model with its optimizer, stepping through the batches in turn; keeps each step's wall time."""

    def __init__(self, model: torch.nn.Module, batches: list, groups: list[dict] | None):
        self.model, self.batches, self.i, self.ms = model.train(), batches, 0, []
        self.optimizer = torch.optim.Adam(groups or model.parameters(), lr=1e-5)

    def step(self, record: bool = True) -> None:
        inputs, targets = self.batches[self.i % len(self.batches)]
        self.i += 1
        t0 = time.perf_counter()
        loss = sequence_loss(self.model, inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if record:
            self.ms.append((time.perf_counter() - t0) * 1e3)


def interleaved_ms(steppers: dict[str, Stepper], rounds: int, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median step time per model, the models taking turns (``steps`` each per round) so that a slow
    spell of the machine falls on all of them, not on whichever happened to be timed then."""
    for stepper in steppers.values():
        for _ in range(warmup):
            stepper.step(record=False)
    for _ in range(rounds):
        for stepper in steppers.values():
            for _ in range(steps):
                stepper.step()
    return {name: statistics.median(stepper.ms) for name, stepper in steppers.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="steps of each model per round")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "qat_step.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    split = load_split(profile)
    batches = list(train_loader(split, profile.batch_size, profile.seed))[:8]
    calib = calibration_sequences(split, 256, profile.seed)
    fp32 = new_model(profile, split)
    steppers = {"fp32": Stepper(fp32, batches, None)}
    for method in METHODS:
        q = quantize_model(fp32, method, 8, 8, 8, calibration=calib.split(128))
        steppers[method] = Stepper(q, batches, param_groups(q, 1e-5, 0.0, 1e-3))
    ms = interleaved_ms(steppers, args.rounds, args.steps)
    for method in METHODS:
        print(method, f"{ms[method]:.1f} ms = {ms[method] / ms['fp32']:.2f} × FP32", flush=True)
    out = {
        "what": "median milliseconds of one training step (forward, backward, Adam), W8A8 fake quantization",
        "profile": profile.name, "dataset": profile.dataset, "batch_size": profile.batch_size,
        "ms": {k: round(v, 2) for k, v in ms.items()},
        "ratio_vs_fp32": {k: round(v / ms["fp32"], 3) for k, v in ms.items()},
        "machine": machine_info(args.threads),
        "command": "python scripts/bench_qat_step.py " + " ".join(argv),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    files.write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
