"""Turning an FP32 SASRec into a fake-quantized one, and training it.

``quantize_model`` swaps every ``nn.Linear`` for a :class:`QuantLinear` (weights per output channel,
inputs per tensor), every ``nn.Embedding`` for a :class:`QuantEmbedding` (per row; the item table's
quantizer is shared with the scoring head, ``head_weight``) and fills the model's named points
(``embed_out``, ``attn_out[i]``, ``ffn_out[i]``, ``head_input``) with activation quantizers.
"""
from __future__ import annotations

import copy
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


def method_module(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown QAT method {method!r}; choose one of {', '.join(METHODS)}")
    return import_module(f"sasrec_nb.quant.{method}")


def make_quantizer(method: str, role: str, bits: int, **options) -> Quantizer:
    """One quantizer of ``method`` for ``role`` "weight" (options: axis, channels) or "act" (signed)."""
    module = method_module(method)
    if role == "weight":
        return module.weight_quantizer(bits, **options)
    if role == "act":
        return module.act_quantizer(bits, **options)
    raise ValueError(f"role must be 'weight' or 'act', got {role!r}")


def quantize_model(
    model: nn.Module,
    method: str,
    weight_bits: int = 8,
    act_bits: int = 8,
    embed_bits: int = 8,
    calibration: Iterable[torch.Tensor] | None = None,
    **options,
) -> nn.Module:
    """A new model with every Linear, Embedding and named point quantized by ``method``.

    ``embed_bits`` sets the item and position tables (kept at 8 bits by default: the item table is both
    the first and the last layer). ``calibration`` (batches of item-id sequences) initialises the
    activation grids; without it they initialise on the first batch they see. Each weight becomes its
    quantizer's :meth:`~sasrec_nb.quant.core.Quantizer.latent_from` (the weight itself except under DoReFa's
    transform), so that QAT starts from the trained model up to rounding.
    """
    module = method_module(method)
    qmodel = copy.deepcopy(model)
    for name, child in list(qmodel.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and not isinstance(sub, QuantLinear):
                wq = module.weight_quantizer(weight_bits, axis=0, channels=sub.out_features, **options)
                aq = module.act_quantizer(act_bits, signed=not full.endswith(POST_RELU), **options)
                start_from(sub.weight, wq)
                setattr(child, attr, QuantLinear(sub, wq, aq))
            elif isinstance(sub, nn.Embedding) and not isinstance(sub, QuantEmbedding):
                wq = module.weight_quantizer(embed_bits, axis=0, channels=sub.num_embeddings, **options)
                start_from(sub.weight, wq)
                setattr(child, attr, QuantEmbedding(sub, wq))
            elif isinstance(sub, nn.Identity) and attr in ACT_POINTS:
                setattr(child, attr, module.act_quantizer(act_bits, signed=True, **options))
    if hasattr(qmodel, "head_weight") and isinstance(getattr(qmodel, "item_emb", None), QuantEmbedding):
        qmodel.head_weight = qmodel.item_emb.weight_quantizer
    qmodel.quant_config = dict(method=method, weight_bits=weight_bits, act_bits=act_bits, embed_bits=embed_bits,
                               options=options)
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
    so each grid is fitted to the inputs the weight-quantized model really produces.
    """
    acts = quantizers(model, "act")
    was_training = model.training
    model.eval()
    for q in acts.values():
        q.start_calibration()
    device = next(model.parameters()).device
    for seqs in batches:
        hidden = model(seqs.to(device))
        if hasattr(model, "logits"):  # reaches head_input, which only the scoring head uses
            model.logits(hidden)
    for q in acts.values():
        q.finish_calibration()
    model.train(was_training)


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0, quant_lr: float = 1e-3) -> list[dict]:
    """Model weights in one group; each quantizer parameter in a group of its own.

    Adam moves every parameter by about its learning rate per step, whatever the gradient's size, so
    LSQ's gradient scale g barely changes Adam's steps (qat_methods.md §0). Scales differ by orders of
    magnitude (≈ 0.002 for an 8-bit weight row, ≈ 0.05 for an activation), so each quantizer
    parameter gets ``lr = quant_lr × mean|value|`` at the time the groups are built: a *relative*
    step of about ``quant_lr``, for every bit width and layer. PACT's L2 on α (λ_α) is its group's
    weight decay.
    """
    quant_params: dict[int, tuple[str, float]] = {}
    for qname, q in quantizers(model).items():
        for pname, p in q.named_parameters(recurse=False):
            quant_params[id(p)] = (f"{qname}.{pname}", q.param_weight_decay)
    weights = [p for p in model.parameters() if id(p) not in quant_params and p.requires_grad]
    groups = [{"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"}]
    for p in model.parameters():
        if id(p) in quant_params and p.requires_grad:
            name, decay = quant_params[id(p)]
            scale = p.detach().abs().mean().item()
            groups.append({"params": [p], "lr": quant_lr * max(scale, 1e-8), "weight_decay": decay, "name": name})
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
