"""Notebook 11's bridge to torchao: a quiet import, the same fake quantization at the same scales, convert."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip("torchao", reason="torchao is in the 'bridge' extra (pip install -e '.[bridge]')")

from sasrec_nb import bridge  # noqa: E402


def test_torchao_is_imported_without_a_message():
    code = "from sasrec_nb import bridge; import torch; m = bridge.prepare_qat(torch.nn.Sequential(" \
           "torch.nn.Linear(8, 4))); m(torch.randn(2, 8)); bridge.convert(m)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", done.stderr[-2000:]


def test_torchaos_weights_are_the_courses_at_the_same_scales():
    torch.manual_seed(0)
    prepared = bridge.prepare_qat(torch.nn.Sequential(torch.nn.Linear(256, 64)))
    linear = prepared[0]
    assert type(linear).__name__ == "FakeQuantizedLinear"
    result = bridge.compare_weights(linear)
    assert result["scale = max|w| / 127.5"] and result["differences on half-steps"]
    assert result["equal"] > 0.99 and result["max difference (steps)"] <= 1.0


def test_a_tie_is_where_the_two_differ():
    """w/s exactly on a half-step: torchao's w · (1/s) and the course's w / s may round it to neighbouring codes, and
    compare_weights reports such a difference as a tie, never as a disagreement of the grids."""
    prepared = bridge.prepare_qat(torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False)))
    linear = prepared[0]
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.3, -0.7, 0.51]]))
    result = bridge.compare_weights(linear)
    assert result["differences on half-steps"] and result["max difference (steps)"] <= 1.0


def test_convert_gives_plain_linears_back():
    prepared = bridge.prepare_qat(torch.nn.Sequential(torch.nn.Linear(8, 4)))
    assert type(bridge.convert(prepared)[0]) is torch.nn.Linear


def test_the_hand_example_of_notebook_11():
    """Row maxima 7.5 and −15 at 4 bits: torchao's scales are max|w| / 7.5 = 1 and 2, so each row's extreme lands on
    a half-step: +7.5 rounds to 8 and is clipped to 7, −7.5 rounds (half to even) to the code −8; the course's
    quantizer at those scales agrees."""
    w = torch.tensor([[7.5, -2.25, 1.0, -6.0], [2.0, -5.5, -15.0, 0.5]])
    theirs, scale = bridge.torchao_fake_quantize(w, 4)
    assert torch.equal(scale, torch.tensor([1.0, 2.0]))
    assert torch.equal(theirs, torch.tensor([[7.0, -2.0, 1.0, -6.0], [2.0, -6.0, -16.0, 0.0]]))
    assert torch.equal(bridge.course_fake_quantize(w, scale, 4), theirs)


def test_fake_quantize_at_8_bits_is_the_prepared_linears():
    torch.manual_seed(1)
    linear = bridge.prepare_qat(torch.nn.Sequential(torch.nn.Linear(32, 8)), activations=False)[0]
    pair = bridge.weight_pair(linear)
    theirs, scale = bridge.torchao_fake_quantize(pair["w"], 8)
    assert torch.equal(theirs, pair["torchao"]) and torch.equal(scale, pair["scale"])
    with pytest.raises(ValueError, match="2 to 8 bits"):
        bridge.torchao_fake_quantize(pair["w"], 9)
