"""What a QAT run records about its quantizers."""
import torch

from sasrec_nb.trace import abs_range


def test_abs_range_is_percentiles_and_max_of_abs():
    x = torch.arange(-500, 500, dtype=torch.float32).reshape(10, 10, 10)  # |x| takes 0..500
    stats = abs_range(x)
    a = x.abs().flatten()
    assert stats["max"] == 500.0
    assert stats["p99"] == a.quantile(0.99).item() and stats["p999"] == a.quantile(0.999).item()
    sampled = abs_range(x, sample=100)  # percentiles on 100 of the 1,000 values, the max on all
    assert sampled["max"] == 500.0 and sampled["p99"] <= 500.0
