"""What a QAT run records about its quantizers, epoch by epoch, for the notebooks' pictures."""
from __future__ import annotations

import torch
from torch import nn

from .quant import capture_inputs, quantizers

#: how many calibration sequences a QAT run's trace reads each epoch (the first ones)
PROBE_SEQUENCES = 128


@torch.no_grad()
def abs_range(x: torch.Tensor, sample: int = 200_000) -> dict[str, float]:
    """The 99th and 99.9th percentile and the max of |x|; the percentiles on a fixed subsample of ``sample``
    values when there are more (quantiles of millions of values are slow)."""
    a = x.abs().flatten().float()
    top = a.max().item()
    if len(a) > sample:
        a = a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))[:sample]]
    p99, p999 = a.quantile(torch.tensor([0.99, 0.999], device=a.device)).tolist()  # one sort for both
    return {"p99": p99, "p999": p999, "max": top}


class QuantizerTrace:
    """Per-epoch record of every quantizer, for the notebooks' pictures.

    ``scales[name]``: the scale or α (mean over channels). ``stats[name]``: on a fixed probe batch, the
    share of the quantizer's input outside its range, and the 99th / 99.9th percentile and max of |input|;
    for activations over the real (non-padding) positions only, as calibration sees them.
    """

    def __init__(self, model: nn.Module, probe: torch.Tensor):
        self.probe = probe
        self.acts = set(quantizers(model, "act"))
        self.scales: dict[str, list[float]] = {n: [] for n in quantizers(model)}
        self.stats: dict[str, list[dict[str, float]]] = {n: [] for n in quantizers(model)}
        self(0, model)

    @torch.no_grad()
    def __call__(self, epoch: int, model: nn.Module) -> None:
        found = quantizers(model)
        was_training = model.training
        model.eval()
        probe = self.probe.to(next(model.parameters()).device)
        with capture_inputs(found) as inputs:
            model.logits(model(probe))
        model.train(was_training)
        real = probe != 0
        for name, q in found.items():
            self.scales[name].append(q.scale.float().mean().item())
            x = inputs[name][real] if name in self.acts else inputs[name]
            self.stats[name].append({"clipped": q.clipped_fraction(x), **abs_range(x)})
