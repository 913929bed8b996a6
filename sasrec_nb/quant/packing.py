"""Sub-byte storage: b-bit integer codes packed into a byte stream, ⌈n·b / 8⌉ bytes for n codes.

Two 4-bit or four 2-bit codes share a byte; 3-bit codes run across byte boundaries (eight codes in three bytes).
Signed codes are stored offset by 2^(b−1), so every stored field is an unsigned b-bit number, least significant bit
first. This is the storage the size column of the results counts (:func:`sasrec_nb.quant.export.model_bytes`).
"""
from __future__ import annotations

import torch


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"packing takes codes of 1 to 8 bits, got {bits!r}")
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def pack(codes: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """``codes`` (any shape, integers within the b-bit range) as a uint8 stream of ⌈numel · bits / 8⌉ bytes."""
    lo, hi = code_range(bits, signed)
    flat = codes.flatten().to(torch.int32)
    if flat.numel() and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"codes span [{int(flat.min())}, {int(flat.max())}], outside the {bits}-bit "
                         f"{'signed' if signed else 'unsigned'} range [{lo}, {hi}]")
    fields = flat - lo
    stream = ((fields[:, None] >> torch.arange(bits)) & 1).flatten()
    stream = torch.cat([stream, stream.new_zeros((-len(stream)) % 8)])
    return (stream.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, signed: bool, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The codes :func:`pack` stored, as int32 of ``shape``."""
    lo, _ = code_range(bits, signed)
    n = int(torch.Size(shape).numel())
    if packed.dtype != torch.uint8 or packed.numel() != (n * bits + 7) // 8:
        raise ValueError(f"{n} codes of {bits} bits take {(n * bits + 7) // 8} bytes; got {packed.numel()} "
                         f"{packed.dtype} values")
    stream = ((packed.to(torch.int32)[:, None] >> torch.arange(8)) & 1).flatten()[: n * bits]
    fields = (stream.view(n, bits) << torch.arange(bits)).sum(1) if n else stream.new_zeros(0)
    return (fields + lo).view(shape)
