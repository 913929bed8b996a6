"""Turning an FP32 SASRec into a fake-quantized one, and training it.

``quantize_model`` swaps every ``nn.Linear`` for a :class:`QuantLinear` (weights per output channel,
inputs per tensor), every ``nn.Embedding`` for a :class:`QuantEmbedding` (per row; the item table's
quantizer is shared with the scoring head, ``head_weight``) and fills the model's named points
(``embed_out``, ``attn_out[i]``, ``ffn_out[i]``, ``head_input``) with activation quantizers.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from contextlib import contextmanager
from importlib import import_module

import torch
from torch import nn

from .core import QuantEmbedding, QuantLinear, Quantizer

METHODS = ("ste", "lsq", "pact", "dorefa", "apot", "adaround")

#: Linear layers whose input is a ReLU output (non-negative): unsigned methods go here.
POST_RELU = ("ffn.fc2",)
#: the model's activation points (module names ending so)
ACT_POINTS = ("embed_out", "attn_out", "ffn_out", "head_input")
#: the residual branches: where a trained transformer keeps a few outlier channels (Bondarenko et al. 2021)
RESIDUAL_POINTS = ("attn_out", "ffn_out")


def method_module(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown QAT method {method!r}; choose one of {', '.join(METHODS)}")
    return import_module(f"sasrec_nb.quant.{method}")


#: arguments every factory takes from quantize_model itself (not method options)
_PLACEMENT = {"bits", "axis", "channels", "signed"}


def method_options(method: str) -> dict[str, tuple[str, ...]]:
    """The options of ``method``'s factories, by role: ``{"weight": (...), "act": (...)}``."""
    module = method_module(method)
    return {role: tuple(n for n in inspect.signature(getattr(module, f"{role}_quantizer")).parameters
                        if n not in _PLACEMENT)
            for role in ("weight", "act")}


def _options_for(method: str, role: str, options: dict) -> dict:
    """The options ``role``'s factory takes; an error naming the valid ones if any option is unknown."""
    valid = method_options(method)
    known = set(valid["weight"]) | set(valid["act"])
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for {method!r}; its options are "
                         f"{', '.join(sorted(known)) or 'none'}")
    return {k: v for k, v in options.items() if k in valid[role]}


def make_quantizer(method: str, role: str, bits: int, **options) -> Quantizer:
    """One quantizer of ``method`` for ``role`` "weight" (options: axis, channels) or "act" (signed)."""
    module = method_module(method)
    if role not in ("weight", "act"):
        raise ValueError(f"role must be 'weight' or 'act', got {role!r}")
    placement = {k: options.pop(k) for k in list(options) if k in _PLACEMENT}
    return getattr(module, f"{role}_quantizer")(bits, **placement, **_options_for(method, role, options))


def check_bits(method: str, weight_bits: int, act_bits: int, embed_bits: int, **options) -> None:
    """Raise the quantizer's own error if ``method`` cannot build one of these bit widths (or options), before
    anything is loaded or trained: one quantizer of each kind is built and thrown away."""
    for what, kind, bits, shape in (("weights", "weight", weight_bits, {"axis": 0, "channels": 1}),
                                    ("item and position tables", "weight", embed_bits, {"axis": 0, "channels": 1}),
                                    ("activations", "act", act_bits, {})):
        try:
            make_quantizer(method, kind, bits, **shape, **options)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None


def quantize_model(
    model: nn.Module,
    method: str,
    weight_bits: int = 8,
    act_bits: int = 8,
    embed_bits: int = 8,
    calibration: Iterable[torch.Tensor] | None = None,
    channel_points: tuple[str, ...] = (),
    **options,
) -> nn.Module:
    """A new model with every Linear, Embedding and named point quantized by ``method``.

    ``embed_bits`` sets the item and position tables (kept at 8 bits by default: the item table is both
    the first and the last layer). ``calibration`` (batches of item-id sequences) initialises the
    activation grids; without it they initialise on the first batch they see. Each weight becomes its
    quantizer's :meth:`~sasrec_nb.quant.core.Quantizer.latent_from` (the weight itself except under DoReFa's
    transform), so that QAT starts from the trained model up to rounding. Named points listed in
    ``channel_points`` (e.g. :data:`RESIDUAL_POINTS`) get one grid per embedding dimension instead of one per tensor
    (Bondarenko et al. 2021's per-embedding-group quantization with a group per dimension), where the method's
    activation quantizer allows it.
    """
    if any(isinstance(m, Quantizer) for m in model.modules()) or getattr(model, "quant_config", None):
        done = getattr(model, "quant_config", None) or {}
        raise ValueError(f"the model is already quantized ({done.get('method', 'quantizers found')}); quantize the "
                         "FP32 model instead (e.g. snb.fp32_model(profile)[0])")
    check_bits(method, weight_bits, act_bits, embed_bits, **options)
    unknown = sorted(set(channel_points) - set(ACT_POINTS))
    if unknown:
        raise ValueError(f"channel_points {unknown} are not activation points; choose from {', '.join(ACT_POINTS)}")
    if channel_points and not {"axis", "channels"} <= set(inspect.signature(method_module(method).act_quantizer)
                                                           .parameters):
        raise ValueError(f"{method!r} has only per-tensor activation grids; channel_points needs a method whose "
                         "act_quantizer takes axis and channels (adaround)")
    w_opts, a_opts = _options_for(method, "weight", options), _options_for(method, "act", options)
    module = method_module(method)
    qmodel = copy.deepcopy(model)
    for name, child in list(qmodel.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear):
                wq = module.weight_quantizer(weight_bits, axis=0, channels=sub.out_features, **w_opts)
                aq = module.act_quantizer(act_bits, signed=not full.endswith(POST_RELU), **a_opts)
                start_from(sub.weight, wq)
                setattr(child, attr, QuantLinear(sub, wq, aq))
            elif isinstance(sub, nn.Embedding):
                wq = module.weight_quantizer(embed_bits, axis=0, channels=sub.num_embeddings, **w_opts)
                start_from(sub.weight, wq)
                setattr(child, attr, QuantEmbedding(sub, wq))
            elif isinstance(sub, nn.Identity) and attr in ACT_POINTS:
                per_dim = {"axis": -1, "channels": qmodel.embed_dim} if attr in channel_points else {}
                setattr(child, attr, module.act_quantizer(act_bits, signed=True, **per_dim, **a_opts))
    if hasattr(qmodel, "head_weight") and isinstance(getattr(qmodel, "item_emb", None), QuantEmbedding):
        qmodel.head_weight = qmodel.item_emb.weight_quantizer
    qmodel.quant_config = dict(method=method, weight_bits=weight_bits, act_bits=act_bits, embed_bits=embed_bits,
                               channel_points=tuple(channel_points), options=options)
    if calibration is not None:
        calibrate_activations(qmodel, calibration)
    return qmodel


@torch.no_grad()
def start_from(weight: nn.Parameter, quantizer: Quantizer) -> None:
    """Replace the trained weight by the latent weight the quantizer maps to it, and fit the grid to it."""
    weight.copy_(quantizer.latent_from(weight.detach()))
    quantizer.init_from(weight.detach())
    quantizer.initialized.fill_(True)


def quantizers(model: nn.Module, role: str | None = None) -> dict[str, Quantizer]:
    """Named quantizers of a model (each once), optionally only ``role`` "weight" or "act"."""
    found: dict[str, Quantizer] = {}
    seen: set[int] = set()
    for name, m in model.named_modules(remove_duplicate=False):
        if not isinstance(m, Quantizer) or id(m) in seen:
            continue
        seen.add(id(m))
        is_weight = name.endswith("weight_quantizer")
        if role is None or (role == "weight") == is_weight:
            found[name] = m
    return found


@torch.no_grad()
def calibrate_activations(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Initialise every activation grid from a few batches (eval mode).

    Activation quantizers pass values through unchanged while they observe; weight quantizers stay on,
    so each grid is fitted to the inputs the weight-quantized model really produces. Only real positions
    are observed (item id > 0): padding is never attended to or scored, yet its hidden states (LayerNorm of a
    zero row, and what the projections make of it) would otherwise pull mean-based steps down and
    stretch abs-max grids.
    """
    acts = quantizers(model, "act")
    was_training = model.training
    model.eval()
    for q in acts.values():
        q.start_calibration()
    device = next(model.parameters()).device
    items = 0
    try:
        for seqs in batches:
            seqs = seqs.to(device)
            real = seqs != 0
            items += int(real.sum())
            for q in acts.values():
                q.real_positions = real
            hidden = model(seqs)
            if hasattr(model, "logits"):  # reaches head_input, which only the scoring head uses
                model.logits(hidden)
        if items == 0:
            raise ValueError("calibration needs sequences with at least one item (id > 0); got none, or only "
                             "padding. Pass batches of item-id sequences, e.g. "
                             "snb.calibration_sequences(split, 1024).split(256)")
    except BaseException:
        for q in acts.values():
            q.start_calibration()  # forget what was seen, then leave calibration mode
            q.calibrating = False
        raise
    finally:
        for q in acts.values():
            q.real_positions = None
        model.train(was_training)
    for q in acts.values():
        q.finish_calibration()


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0, quant_lr: float = 1e-3) -> list[dict]:
    """Model weights in one group; each quantizer parameter in a group of its own.

    Adam moves every parameter by about its learning rate per step, whatever the gradient's size, so
    LSQ's gradient scale g barely changes Adam's steps (qat_methods.md §0). Scales differ by orders of
    magnitude (≈ 0.002 for an 8-bit weight row, ≈ 0.05 for an activation), so each quantizer
    parameter gets ``lr = quant_lr × mean|value|`` at the time the groups are built: a *relative*
    step of about ``quant_lr``, for every bit width and layer.

    A quantizer whose ``param_optimizer`` is "sgd" (PACT's α) gets a group marked ``optimizer="sgd"``
    with its own ``param_lr``, momentum 0.9 and its L2 penalty (``param_weight_decay``) as weight decay:
    :func:`sasrec_nb.training.fit` steps those groups with SGD, the paper's optimizer, so that the size of
    α's gradient (clipped values against λ_α·α) decides its steps.
    """
    quant_params: dict[int, tuple[str, Quantizer]] = {}
    for qname, q in quantizers(model).items():
        for pname, p in q.named_parameters(recurse=False):
            quant_params[id(p)] = (f"{qname}.{pname}", q)
    weights = [p for p in model.parameters() if id(p) not in quant_params and p.requires_grad]
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    for p in model.parameters():
        if id(p) in quant_params and p.requires_grad:
            name, q = quant_params[id(p)]
            if q.param_optimizer == "sgd":
                groups.append({"params": [p], "lr": q.param_lr, "momentum": 0.9, "weight_decay": q.param_weight_decay,
                               "optimizer": "sgd", "name": name})
            else:
                scale = p.detach().abs().mean().item()
                groups.append({"params": [p], "lr": quant_lr * max(scale, 1e-8), "weight_decay": q.param_weight_decay,
                               "name": name})
    return groups


@contextmanager
def capture_inputs(modules: dict[str, nn.Module]):
    """Record the first input each module receives while the block runs: ``{name: tensor}``.

    The hooks return None, so the modules' outputs are left untouched.
    """
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module, args, _output) -> None:
            seen.setdefault(name, args[0].detach())
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
