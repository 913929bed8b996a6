"""Packed sub-byte codes: exact round trip, the byte count of the bit arithmetic, clear errors."""
from __future__ import annotations

import pytest
import torch

from sasrec_nb.quant.packing import pack, unpack


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shape", [(7,), (5, 13), (0,)])
def test_round_trip_and_size(bits, signed, shape):
    lo = -(1 << (bits - 1)) if signed else 0
    codes = torch.randint(lo, lo + (1 << bits), shape, generator=torch.Generator().manual_seed(bits))
    packed = pack(codes, bits, signed)
    n = codes.numel()
    assert packed.dtype == torch.uint8 and packed.numel() == (n * bits + 7) // 8
    assert torch.equal(unpack(packed, bits, signed, codes.shape), codes.to(torch.int32))


def test_hand_checked_bytes():
    # four signed 2-bit codes -2, -1, 0, 1 are fields 0, 1, 2, 3: 0b11_10_01_00 (first code in the low bits)
    assert pack(torch.tensor([-2, -1, 0, 1]), 2, True).tolist() == [0b11100100]
    # two unsigned 4-bit codes 3 and 10: 0xA3
    assert pack(torch.tensor([3, 10]), 4, False).tolist() == [0xA3]
    # eight 3-bit codes 0..7 fill three bytes exactly
    assert pack(torch.arange(8), 3, False).numel() == 3


def test_out_of_range_codes_and_bad_widths_are_refused():
    with pytest.raises(ValueError, match=r"outside the 2-bit signed range \[-2, 1\]"):
        pack(torch.tensor([0, 2]), 2, True)
    with pytest.raises(ValueError, match="1 to 8 bits"):
        pack(torch.tensor([0]), 9, False)
    with pytest.raises(ValueError, match="take 1 bytes"):
        unpack(torch.zeros(2, dtype=torch.uint8), 2, True, (4,))
