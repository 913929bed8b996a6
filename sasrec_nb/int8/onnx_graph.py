"""The ONNX graph of a SASRec state, written node by node with ``onnx.helper``.

Writing the graph by hand (rather than tracing the model) keeps it readable and puts the learned
scales in it as plain constants: the current ``torch.onnx`` exporter rejects ``fake_quantize_*``.
Where the state holds integer codes (see :mod:`.state`) the graph is a QDQ graph:

    x ─ QuantizeLinear(s_x, zp) ─ DequantizeLinear ─┐           u8 activations, zp 128 when signed
    W (u8) ─ DequantizeLinear(s_w, zp 128, axis=out) ┴─ MatMul ─ Add(b)   int8 codes per channel, as u8

which onnxruntime rewrites into integer kernels (``MatMulIntegerToFloat``, ``QGemm``); named points
are a Q → DQ pair alone. Where the state holds FP32 weights (an FP32 model) the same graph is built
without Q/DQ, the like-for-like reference. The item table is stored once, per row: ``Gather``
reads rows for the lookup, and the head is ``Gemm(transB=1)`` against the whole table with a −inf
bias on the padding column (added after
the Gemm). The last block runs the lastpos path of :mod:`.lastpos`.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .state import Grid

OPSET = 21
LAST = np.iinfo(np.int64).max


class SASRecGraph:
    """Builds the graph from ``state`` (``model_state``); nodes are named after the model's modules."""

    def __init__(self, state: dict):
        self.t, self.cfg = state["tensors"], state["config"]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}

    # -- primitives ---------------------------------------------------------------------------------
    def const(self, value, dtype=np.float32, name: str | None = None) -> str:
        name = name or f"const_{len(self.inits)}"
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def tensor(self, key: str, transform=None) -> str:
        """A state tensor as an initializer named by its state key (transformed once, on first use)."""
        array = self.t[key].numpy()
        array = array if transform is None else transform(array)
        return self.const(array, array.dtype, key)

    def codes(self, name: str, transpose: bool = False) -> str:
        """A weight's int8 codes q stored as uint8 u = q + 128 (zero point 128), see :meth:`weight`."""
        to_u8 = lambda a: (a.astype(np.int16) + 128).astype(np.uint8)
        return self.tensor(f"{name}.weight", (lambda a: np.ascontiguousarray(to_u8(a).T)) if transpose else to_u8)

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = f"{op_type}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def ints(self, *values: int) -> str:
        return self.const(values, np.int64)

    # -- quantization -------------------------------------------------------------------------------
    def qdq(self, x: str, key: str) -> str:
        """x̂ = s·clamp(round(x/s), lo, hi) as QuantizeLinear → DequantizeLinear (uint8, zp 0 or 128)."""
        g = Grid.of(self.t[key])
        scale = g.scale.numpy() if g.per_channel else g.scale  # per channel: along the last axis (embedding dim)
        s = self.const(scale, name=f"{key}.scale")
        zp = self.const(np.full(np.shape(scale), g.zero_point), np.uint8, f"{key}.zero_point")
        axis = {"axis": -1} if g.per_channel else {}
        if g.lo + g.zero_point > 0 or g.hi + g.zero_point < 255:  # a ±127 grid inside uint8's range
            lo, hi = self.const(np.multiply(g.lo, scale)), self.const(np.multiply(g.hi, scale))
            x = self.op("Min", self.op("Max", x, lo), hi) if g.per_channel else self.op("Clip", x, lo, hi)
        return self.op("DequantizeLinear", self.op("QuantizeLinear", x, s, zp, **axis), s, zp, **axis)

    def point(self, x: str, name: str) -> str:
        key = f"{name}.grid"
        return self.qdq(x, key) if key in self.t else x

    def offset_term(self, y: str, xd: str, name: str) -> str:
        """y + o ⊗ Σ x̂: the exact correction of an offset grid (DoReFa, see state.weight_codes)."""
        key = f"{name}.weight_offset"
        if key not in self.t:
            return y
        total = self.op("ReduceSum", xd, self.ints(-1), keepdims=1)
        return self.op("Add", y, self.op("Mul", total, self.tensor(key)))

    def weight(self, name: str, axis: int, transpose: bool) -> str:
        """The weight as the GEMM sees it: DQ(codes, per-channel scale) or the FP32 tensor.

        The codes are stored as uint8 with zero point 128 (u8 × u8 GEMMs), not int8: onnxruntime's u8 × s8
        kernels sum pairs of products in int16 on CPUs without VNNI (AVX2), which saturates on full-range
        codes (``vpmaddubsw``; its quantization docs recommend U8U8 there), while its u8 × u8 kernels widen
        to 16 bits first and are exact on every CPU. The stored values, and the model, are unchanged.
        """
        if f"{name}.weight_scale" not in self.t:
            return self.tensor(f"{name}.weight", (lambda a: np.ascontiguousarray(a.T)) if transpose else None)
        zp = self.const(np.full(len(self.t[f"{name}.weight_scale"]), 128), np.uint8, f"{name}.weight_zero_point")
        return self.op("DequantizeLinear", self.codes(name, transpose), self.tensor(f"{name}.weight_scale"), zp,
                       axis=axis)

    # -- layers -------------------------------------------------------------------------------------
    def linear(self, x: str, name: str) -> str:
        xd = self.qdq(x, f"{name}.input_grid") if f"{name}.input_grid" in self.t else x
        y = self.op("MatMul", xd, self.weight(name, axis=1, transpose=True))
        return self.offset_term(self.op("Add", y, self.tensor(f"{name}.bias")), xd, name)

    def lookup(self, ids: str, name: str) -> str:
        """Rows of a table: s_i · q_i, or levels[q_i + 128] · m_i for an offset grid (as Int8Embedding), gathered
        per id; or FP32 rows."""
        if f"{name}.weight_scale" not in self.t:
            return self.op("Gather", self.tensor(f"{name}.weight"), ids)
        rows = self.op("Gather", self.codes(name), ids)  # u = q + 128
        per_row = lambda key: self.op("Unsqueeze", self.op("Gather", self.tensor(key), ids), self.ints(-1))
        if f"{name}.weight_levels" not in self.t:
            q = self.op("Sub", self.op("Cast", rows, to=TensorProto.FLOAT), self.const(128.0))
            return self.op("Mul", q, per_row(f"{name}.weight_scale"))
        unit = self.op("Gather", self.tensor(f"{name}.weight_levels"), self.op("Cast", rows, to=TensorProto.INT64))
        return self.op("Mul", unit, per_row(f"{name}.weight_magnitude"))

    def layer_norm(self, x: str, name: str) -> str:
        return self.op("LayerNormalization", x, self.tensor(f"{name}.weight"), self.tensor(f"{name}.bias"),
                       axis=-1, epsilon=1e-8)

    def attention(self, queries: str, keys: str, mask: str, name: str) -> str:
        """softmax(Q Kᵀ / √d_h + mask) V per head, then the output projection (FP32 between the GEMMs)."""
        d, h = self.cfg["embed_dim"], self.cfg["num_heads"]
        heads = self.ints(0, 0, h, d // h)
        split = lambda x, perm: self.op("Transpose", self.op("Reshape", x, heads), perm=perm)
        q = split(self.linear(queries, f"{name}.q"), [0, 2, 1, 3])
        k = split(self.linear(keys, f"{name}.k"), [0, 2, 3, 1])
        v = split(self.linear(keys, f"{name}.v"), [0, 2, 1, 3])
        logits = self.op("Mul", self.op("MatMul", q, k), self.const(1 / math.sqrt(d // h)))
        att = self.op("Softmax", self.op("Add", logits, mask), axis=-1)
        y = self.op("Reshape", self.op("Transpose", self.op("MatMul", att, v), perm=[0, 2, 1, 3]), self.ints(0, 0, d))
        return self.linear(y, f"{name}.out")

    def block(self, x: str, i: int, mask: str, keep: str, last: bool) -> str:
        """Block.forward; for the last block, queries, FFN and mask row at the last position only."""
        p = f"blocks.{i}"
        at_last = lambda t, axis: self.op("Slice", t, self.ints(-1), self.ints(LAST), self.ints(axis))
        xq, mask, keep = (at_last(x, 1), at_last(mask, 2), at_last(keep, 1)) if last else (x, mask, keep)
        paper = self.cfg["residual"] == "paper"  # x + Attn(LN(x)) with normalised keys; else the port's form
        h = self.layer_norm(x if paper else xq, f"{p}.ln_attn")
        q, keys = (at_last(h, 1) if last else h, h) if paper else (h, x)
        xq = self.op("Add", xq if paper else q, self.point(self.attention(q, keys, mask, f"{p}.attn"), f"{p}.attn_out"))
        q = self.layer_norm(xq, f"{p}.ln_ffn")
        f = self.linear(self.op("Relu", self.linear(q, f"{p}.ffn.fc1")), f"{p}.ffn.fc2")
        return self.op("Mul", self.op("Add", xq if paper else q, self.point(f, f"{p}.ffn_out")), keep)

    def head(self, hidden: str) -> str:
        """Scores of every row of the item table; column 0 (padding) gets −inf through the bias.

        The bias is added after the Gemm: onnxruntime fuses DQ → Gemm into ``QGemm`` only without a
        float C input (a QDQ Gemm's bias must be int32, which cannot hold −inf).
        """
        x = self.qdq(hidden, "head_input.grid") if "head_input.grid" in self.t else hidden
        zeros = self.op("ConstantOfShape", self.ints(self.cfg["num_items"]),
                        value=numpy_helper.from_array(np.zeros(1, np.float32)))
        bias = self.op("Concat", self.const([-np.inf]), zeros, axis=0)
        y = self.op("Gemm", x, self.weight("item_emb", axis=0, transpose=False), transB=1)
        return self.op("Add", self.offset_term(y, x, "item_emb"), bias)

    # -- whole graphs -------------------------------------------------------------------------------
    def sasrec(self, seqs: str) -> str:
        """Model.scores through lastpos: item ids [B, L] → scores [B, num_items + 1]."""
        max_len, d = self.cfg["max_len"], self.cfg["embed_dim"]
        length = self.op("Shape", seqs, start=1, end=2)
        keep_b = self.op("Not", self.op("Equal", seqs, self.const(0, np.int64)))
        keep = self.op("Unsqueeze", self.op("Cast", keep_b, to=TensorProto.FLOAT), self.ints(-1))
        start = self.op("Squeeze", self.op("Sub", self.ints(max_len), length))
        positions = self.op("Range", start, self.const(max_len, np.int64), self.const(1, np.int64))
        x = self.op("Add", self.op("Mul", self.lookup(seqs, "item_emb"), self.const(math.sqrt(d))),
                    self.lookup(positions, "pos_emb"))
        x = self.point(self.op("Mul", x, keep), "embed_out")
        steps = self.op("Range", self.const(0, np.int64), self.op("Squeeze", length), self.const(1, np.int64))
        rows, cols = self.op("Unsqueeze", steps, self.ints(1)), self.op("Unsqueeze", steps, self.ints(0))
        causal = self.op("GreaterOrEqual", rows, cols)
        causal_keys = self.op("And", causal, self.op("Unsqueeze", keep_b, self.ints(1, 2)))
        allowed = self.op("Or", causal_keys, self.op("Equal", rows, cols))  # attention_mask: [B, 1, L, L]
        mask = self.op("Where", allowed, self.const(0.0), self.const(-np.inf))
        n = self.cfg["num_blocks"]
        for i in range(n):
            x = self.block(x, i, mask, keep, last=i == n - 1)
        hidden = self.op("Squeeze", self.layer_norm(x, "last_ln"), self.ints(1))
        return self.head(hidden)

    def model(self, part: str = "model") -> onnx.ModelProto:
        """``part="model"``: input ``seqs`` int64 [B, L]; ``"head"``: input ``hidden`` float [B, d]."""
        if part == "model":
            inp = helper.make_tensor_value_info("seqs", TensorProto.INT64, ["batch", "length"])
            out = self.sasrec("seqs")
        elif part == "head":
            inp = helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", self.cfg["embed_dim"]])
            out = self.head("hidden")
        else:
            raise ValueError(f"part must be 'model' or 'head', got {part!r}")
        self.nodes.append(helper.make_node("Identity", [out], ["scores"], name="scores"))
        scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", self.cfg["num_items"] + 1])
        graph = helper.make_graph(self.nodes, f"sasrec_{part}", [inp], [scores], list(self.inits.values()))
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sasrec_nb")
        proto.ir_version = 10
        onnx.checker.check_model(proto)
        return proto
