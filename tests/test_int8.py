"""Real INT8 SASRec: both back ends against the fake-quant twin, the lastpos path, size and refusals.

A small random SASRec is quantized with each uniform method and calibrated on random sequences. The
integer model must reproduce its fake-quant twin (not the FP32 model): the same scores up to float
rounding, except where x/s falls within rounding error of a tie and one code flips, which moves a
few rows a little.
"""
import pytest
import torch

from sasrec_nb.int8 import (BACKENDS, export_onnx, fp32_scorer, onnx_integer_matmuls, saved_bytes, to_int8)
from sasrec_nb.int8 import check
from sasrec_nb.int8.bench import random_seqs
from sasrec_nb.int8 import torch_backend
from sasrec_nb.int8.state import Grid, model_state
from sasrec_nb.model import RESIDUALS, SASRec
from sasrec_nb.quant import calibrate_activations, quantize_model
from sasrec_nb.quant.apply import RESIDUAL_POINTS

UNIFORM = ("ste", "lsq", "pact", "dorefa", "adaround")
#: the twins converted to integers: every uniform method, and AdaRound with its residual branches per dimension
TWINS = {**{m: (m, {}) for m in UNIFORM},
         "adaround-residual-per-dim": ("adaround", {"channel_points": RESIDUAL_POINTS})}
NUM_ITEMS, DIM, HEADS, BLOCKS, MAX_LEN = 300, 32, 2, 2, 20


def needs_ort() -> None:
    pytest.importorskip("onnx", reason="the ONNX back end needs the optional deploy dependency onnx")
    pytest.importorskip("onnxruntime", reason="the ONNX back end needs the optional deploy dependency onnxruntime")


def quantized(model: SASRec, method: str, **bits) -> SASRec:
    qmodel = quantize_model(model, method, **{"weight_bits": 8, "act_bits": 8, "embed_bits": 8, **bits})
    calibrate_activations(qmodel, [random_seqs(model.num_items, 64, model.max_len, seed=s) for s in range(3)])
    return qmodel.eval()


def with_residual(residual: str) -> SASRec:
    torch.manual_seed(0)
    return SASRec(NUM_ITEMS, DIM, HEADS, BLOCKS, MAX_LEN, residual=residual).eval()


@pytest.fixture(scope="module")
def fp32() -> SASRec:
    return with_residual("paper")


@pytest.fixture(scope="module")
def seqs() -> torch.Tensor:
    return random_seqs(NUM_ITEMS, 300, MAX_LEN, seed=100)


@pytest.fixture(scope="module", params=list(TWINS))
def twin(request, fp32) -> SASRec:
    method, options = TWINS[request.param]
    return quantized(fp32, method, **options)


def top10_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows whose top-10 item sets are equal."""
    top = lambda s: s.topk(10).indices.sort(-1).values
    return (top(a) == top(b)).all(-1).float().mean().item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_model_matches_fake_quant_twin(twin, backend, seqs, tmp_path):
    assert_matches_twin(twin, backend, seqs, tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_model_of_the_port_block_matches_its_twin(backend, seqs, tmp_path):
    assert_matches_twin(quantized(with_residual("port"), "lsq"), backend, seqs, tmp_path)


def assert_matches_twin(twin: SASRec, backend: str, seqs: torch.Tensor, tmp_path) -> None:
    if backend == "onnx":
        needs_ort()
    model = to_int8(twin, backend, tmp_path / "model.onnx", threads=1)
    with torch.no_grad():
        ref = twin.scores(seqs)
    out = model.scores(seqs)
    assert out.shape == ref.shape and torch.isneginf(out[:, 0]).all()
    row_err = (out[:, 1:] - ref[:, 1:]).abs().amax(1) / ref[:, 1:].abs().max()
    agree = top10_agreement(out, ref)
    print(f"{twin.quant_config['method']}/{backend}: max |Δ| / max |score| = {row_err.max():.1e}, "
          f"median row {row_err.median():.1e}, top-10 equal in {agree:.1%} of rows")
    assert row_err.median() < 1e-5
    assert row_err.quantile(0.95) < 1e-3
    assert row_err.max() < 0.1
    assert agree >= 0.99
    if backend == "onnx":
        assert onnx_integer_matmuls(model.path) == 6 * BLOCKS + 1  # every Linear and the head


@pytest.mark.parametrize("backend", BACKENDS)
def test_offset_grid_tables_are_looked_up_exactly_as_the_twin(fp32, backend):
    """DoReFa's table has no zero level: the lookup must give the twin's c·(2j/255 − 1) bit for bit (s·q + o
    differs by a float ulp, which moves the embedding output across rounding half-steps)."""
    twin = quantized(fp32, "dorefa")
    with torch.no_grad():
        table = twin.item_emb.weight_quantizer(twin.item_emb.weight)
    ids = torch.arange(NUM_ITEMS + 1)
    if backend == "torch":
        looked_up = to_int8(twin, "torch").body.item_emb(ids)
    else:
        needs_ort()
        import onnxruntime as ort
        from onnx import TensorProto, helper

        from sasrec_nb.int8.onnx_graph import OPSET, SASRecGraph

        g = SASRecGraph(model_state(twin))
        out = g.lookup("ids", "item_emb")
        graph = helper.make_graph(g.nodes, "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, DIM])],
                                  list(g.inits.values()))
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        proto.ir_version = 10
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        looked_up = torch.from_numpy(session.run(None, {"ids": ids.numpy()})[0])
    assert torch.equal(looked_up, table)


@pytest.mark.parametrize("split", [False, True], ids=["one-gemm", "split-weights"])
def test_integer_linear_is_exact_at_the_extremes_of_the_codes(split, monkeypatch):
    """u = 255 against q = −128 (and every other extreme pair) gives the exact int32 sum, whether the CPU's kernel
    sums pairs in int32 (VNNI) or the weights are split q = 2a + b to keep int16 pair sums from saturating."""
    from sasrec_nb.int8.torch_backend import Int8Linear

    if not split and torch_backend.pair_sums_saturate():
        pytest.skip("this CPU's u8 × s8 kernel saturates int16 pair sums (no VNNI): the split path serves it")
    monkeypatch.setattr(torch_backend, "pair_sums_saturate", lambda: split)
    torch.manual_seed(0)
    codes = torch.randint(-128, 128, (48, 96), dtype=torch.int8)
    codes[0], codes[1] = -128, 127
    grid = Grid(scale=1.0, lo=-128, hi=127)
    x = torch.randint(-128, 128, (20, 96)).float()
    x[0], x[1] = 127.0, -128.0
    exact = (x @ codes.float().T).double()  # integers below 2^24: exact in float
    out = Int8Linear(codes, torch.ones(48), None, None, grid)(x)
    assert torch.equal(out.double(), exact)


def test_the_saturation_probe_tells_the_truth():
    """pair_sums_saturate() is True exactly when one u8 × s8 GEMM of extreme codes misses the exact sum."""

    torch_backend.pair_sums_saturate.cache_clear()
    u = torch.full((4, 256), 255, dtype=torch.uint8)
    packed = torch.ops.onednn.qlinear_prepack(torch.full((8, 256), -128, dtype=torch.int8), None)
    y = torch_backend._gemm(u, Grid(1.0, 0, 255), packed, torch.ones(8), torch.zeros(8, dtype=torch.long), None)
    assert torch_backend.pair_sums_saturate() == (not torch.equal(y, torch.full((4, 8), 255.0 * -128 * 256)))


def test_the_torch_back_end_uses_no_deprecated_quantization_api(fp32, seqs):
    """No quantized tensor dtype and no function that makes one (deprecated in PyTorch 2.13)."""
    import ast
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"(?s).*deprecat")
        to_int8(quantized(fp32, "ste"), "torch").scores(seqs[:8])
    tree = ast.parse(open(torch_backend.__file__).read())
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not used & {"quantize_per_tensor", "quantize_per_channel", "qint8", "quint8", "qint32", "quantized"}


@pytest.mark.parametrize("residual", RESIDUALS)
def test_lastpos_path_gives_model_scores(residual, seqs):
    fp32 = with_residual(residual)
    ref = fp32.scores(seqs)
    out = fp32_scorer(fp32).scores(seqs)
    assert torch.isneginf(out[:, 0]).all()
    assert torch.allclose(out[:, 1:], ref[:, 1:], atol=1e-5)


@pytest.mark.parametrize("residual", RESIDUALS)
def test_onnx_fp32_graph_gives_model_scores(residual, seqs, tmp_path):
    needs_ort()
    from sasrec_nb.int8 import OnnxSASRec

    fp32 = with_residual(residual)
    path = export_onnx(fp32, tmp_path / "fp32.onnx")
    out = OnnxSASRec(path, threads=1).scores(seqs)
    assert torch.allclose(out[:, 1:], fp32.scores(seqs)[:, 1:], atol=1e-4)
    assert onnx_integer_matmuls(path) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_size_is_under_three_tenths_of_fp32(backend, tmp_path):
    if backend == "onnx":
        needs_ort()
    torch.manual_seed(0)
    model = SASRec(10_000, 64, 2, 2, 50).eval()
    int8 = to_int8(quantized(model, "lsq"), backend, tmp_path / "model.onnx", threads=1)
    ratio = saved_bytes(int8) / saved_bytes(model)
    print(f"{backend}: {saved_bytes(int8):,} / {saved_bytes(model):,} bytes = {ratio:.3f}")
    assert ratio <= 0.3


@pytest.mark.parametrize("method, bits, message", [
    ("apot", {}, "shift-add"),
    ("lsq", {"weight_bits": 4}, "int8 only"),
    ("ste", {"act_bits": 6}, "int8 only"),
])
def test_refuses_what_int8_kernels_cannot_run(fp32, method, bits, message):
    qmodel = quantize_model(fp32, method, **{"weight_bits": 8, "act_bits": 8, **bits})
    with pytest.raises(ValueError, match=message):
        to_int8(qmodel)


def test_a_residual_grid_per_dimension_is_stored_per_dimension_and_only_there(fp32):
    """[s_1 … s_d, lo, hi] at attn_out / ffn_out; the head's input feeds an integer GEMM and must stay per tensor."""
    t = model_state(quantized(fp32, "adaround", channel_points=RESIDUAL_POINTS))["tensors"]
    grid = Grid.of(t["blocks.0.ffn_out.grid"])
    assert grid.per_channel and grid.scale.shape == (DIM,) and (grid.lo, grid.hi) == (-128, 127)
    assert torch.equal(Grid.of(grid.tensor()).scale, grid.scale) and not Grid.of(t["embed_out.grid"]).per_channel
    with pytest.raises(ValueError, match="one activation scale per tensor"):
        model_state(quantized(fp32, "adaround", channel_points=("head_input",)))


def test_refuses_an_uncalibrated_model(fp32):
    with pytest.raises(ValueError, match="calibrate"):
        to_int8(quantize_model(fp32, "lsq"))


def test_top_k_agreement_is_taken_in_eval_mode():
    torch.manual_seed(0)
    model = SASRec(40, embed_dim=16, num_heads=2, num_blocks=1, max_len=8, dropout=0.5).train()
    seqs = torch.randint(1, 41, (64, 8))
    assert check.top_k_agreement(model, model, seqs) == 1.0
    assert model.training


def test_integer_kernels_round_like_the_fake_quant_model():
    """Half-steps (x/s = k + ½ up to float error) round as torch.round(x / s) does in the fake-quant twin."""
    from sasrec_nb.int8.torch_backend import QDQ, Int8Linear

    s, grid = 0.1, Grid(scale=0.1, lo=-128, hi=127)
    x = (torch.arange(-100, 100) + 0.5) * s
    expected = torch.clamp(torch.round(x / s), -128, 127) * s
    assert torch.equal(QDQ(grid)(x), expected)
    identity = Int8Linear(torch.eye(200, dtype=torch.int8), torch.ones(200), None, None, grid)
    assert torch.allclose(identity(x[None])[0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_recommend_in_item_chunks_gives_the_top_10_of_the_full_scores(fp32, seqs, chunk):
    """FP32 and INT8 alike: the top-10 taken chunk by chunk (never the B × N score matrix) are the full top-10."""
    twin = quantized(fp32, "lsq")
    from sasrec_nb.int8.torch_backend import Int8Head

    int8 = to_int8(twin, "torch")
    t = model_state(twin)["tensors"]
    int8.scorer = Int8Head(t["item_emb.weight"], t["item_emb.weight_scale"], None, Grid.of(t["head_input.grid"]),
                           chunk=chunk)
    for model, recommend in ((fp32_scorer(fp32), lambda m: m.recommend(seqs, 10, chunk)),
                             (int8, lambda m: m.recommend(seqs, 10))):
        full = model.scores(seqs).topk(10, dim=1).indices.sort(1).values
        assert torch.equal(recommend(model).sort(1).values, full)


def test_int8_head_packs_the_table_in_chunks(fp32, seqs):
    from sasrec_nb.int8.torch_backend import Int8Head

    t = model_state(quantized(fp32, "lsq"))["tensors"]
    head = Int8Head(t["item_emb.weight"], t["item_emb.weight_scale"], None, Grid.of(t["head_input.grid"]), chunk=64)
    whole = Int8Head(t["item_emb.weight"], t["item_emb.weight_scale"], None, Grid.of(t["head_input.grid"]))
    hidden = torch.randn(12, DIM)
    assert len(head.chunks) == -(-(NUM_ITEMS + 1) // 64) and len(whole.chunks) == 1
    assert torch.equal(head(hidden), whole(hidden))
    assert torch.equal(head.recommend(hidden).sort(1).values, whole(hidden).topk(10).indices.sort(1).values)


def test_time_parts_reports_every_stage_for_both_paths(fp32, seqs):
    from sasrec_nb.int8.bench import PARTS, time_parts

    for scorer in (fp32_scorer(fp32), to_int8(quantized(fp32, "lsq"), "torch")):
        parts = time_parts(scorer, seqs[:8], repeat=3)
        assert list(parts) == list(PARTS) and all(v >= 0 for v in parts.values()) and parts["Linears"] > 0
