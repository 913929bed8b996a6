"""The INT8 benchmark's target check reads the best INT8 path of each row against the best FP32 path."""
from __future__ import annotations

from sasrec_nb.int8.bench import TARGETS, target_check


def fake_bench(speedups: dict[tuple[str, int, int], tuple[float, float]]) -> dict:
    """A benchmark JSON with (int8_torch, int8_onnx) speed-ups over the best FP32 for each (part, items, batch)."""
    return {"results": [{"shape": "quick", "part": part, "num_items": items, "batch": batch, "best_fp32": "fp32_onnx",
                         "speedup_vs_best_fp32": {"int8_torch": t, "int8_onnx": o, "fp32_onnx": 1.0}}
                        for (part, items, batch), (t, o) in speedups.items()]}


def test_each_target_uses_the_faster_int8_path_and_compares_with_its_threshold():
    bench = fake_bench({("head", 100_000, 1): (3.2, 1.0), ("head", 100_000, 32): (1.0, 1.9),
                        ("model", 3416, 32): (0.9, 0.99)})
    checks = {(c["part"], c["items"], c["batch"]): c for c in target_check(bench)}
    assert set(checks) == {("head", 100_000, 1), ("head", 100_000, 32), ("model", 3416, 32)}  # untimed rows left out
    assert checks["head", 100_000, 1]["met"] and checks["head", 100_000, 1]["best_int8"] == "int8_torch"
    assert not checks["head", 100_000, 32]["met"] and checks["head", 100_000, 32]["speedup"] == 1.9
    assert not checks["model", 3416, 32]["met"]  # "never slower": 0.99 misses it
    assert all(c["target"] == dict(((p, i, b), t) for p, i, b, t in TARGETS)[k] for k, c in checks.items())


def test_other_shapes_are_not_read():
    bench = fake_bench({("head", 100_000, 1): (9.0, 9.0)})
    bench["results"][0]["shape"] = "full"
    assert target_check(bench) == []
