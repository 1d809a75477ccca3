"""Darknet's activation functions (activations.h / activations.c) in torch, with Darknet's formulas: one table,
``TABLE``, keyed by the names the cfg parser gives, with each activation's forms (reference, in place,
oneDNN-fused, ONNX-decomposed). Adding an activation is one entry here plus its name in ``graph.ACTIVATIONS``;
importing this module checks that the two agree."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .graph import ACTIVATION_ALIASES, ACTIVATIONS
from .registry import Registry


def _softplus20(x):
    # Darknet's softplus with threshold 20: x > 20 -> x, x < -20 -> exp(x), else log(exp(x) + 1)
    return torch.where(x < -20, torch.exp(x), F.softplus(x, beta=1.0, threshold=20.0))


def mish(x):
    return x * torch.tanh(_softplus20(x))


def hard_mish(x):
    return torch.where(x > 0, x, torch.where(x > -2, x * x / 2 + x, torch.zeros_like(x)))


def _stair(x):
    n = torch.floor(x)
    odd = torch.remainder(n, 2) != 0
    return torch.where(odd, (x - n) + torch.floor(x / 2), torch.floor(x / 2))


def _normalize_channels(x):
    pos = torch.clamp(x, min=0)
    return pos / (0.0001 + pos.sum(dim=1, keepdim=True))


def _normalize_channels_softmax(x, use_max):
    m = x.max(dim=1, keepdim=True).values if use_max else 0.0
    e = torch.exp(x - m)
    return e / (0.0001 + e.sum(dim=1, keepdim=True))


def _hard_mish_onnx(x):
    # x > 0: x; -2 < x <= 0: x*x/2 + x = x*(x+2)/2; x <= -2: 0
    return x * torch.clamp(x + 2, 0, 2) * 0.5


@dataclass(frozen=True)
class Activation:
    """The forms of one Darknet activation. ``ref``: Darknet's formula, out of place (the reference modules,
    autograd); ``inplace``: the same on a tensor the caller owns (the fast plan), None: ``ref``; ``onednn``:
    ``(attr, scalars)`` of the oneDNN post-op ``mkldnn::_convolution_pointwise`` fuses into a convolution, None:
    not fusable; ``onnx``: decomposed into standard ONNX operators for the export, None: ``ref`` traces as is."""
    ref: Callable
    inplace: Callable | None = None
    onednn: tuple | None = None
    onnx: Callable | None = None


# keyed by the names graph.py's parser gives (graph.ACTIVATIONS, after graph.ACTIVATION_ALIASES)
TABLE = Registry("activations")
for _name, _form in {
    "linear": Activation(lambda x: x, lambda y: y, ("none", []), lambda x: x),
    "logistic": Activation(torch.sigmoid, torch.sigmoid_, ("sigmoid", [])),
    "loggy": Activation(lambda x: 2 * torch.sigmoid(x) - 1),
    "relu": Activation(F.relu, torch.relu_, ("relu", [])),
    "relu6": Activation(lambda x: torch.clamp(x, 0, 6), lambda y: y.clamp_(0.0, 6.0), ("hardtanh", [0.0, 6.0])),
    "elu": Activation(lambda x: torch.where(x >= 0, x, torch.expm1(x)),
                      onnx=lambda x: torch.where(x >= 0, x, torch.exp(x) - 1)),
    "selu": Activation(lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * torch.expm1(x)),
                       onnx=lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (torch.exp(x) - 1))),
    "gelu": Activation(lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x * x * x))),
    "relie": Activation(lambda x: torch.where(x > 0, x, 0.01 * x)),
    "ramp": Activation(lambda x: x * (x > 0) + 0.1 * x),
    "leaky": Activation(lambda x: F.leaky_relu(x, 0.1), lambda y: F.leaky_relu_(y, 0.1), ("leaky_relu", [0.1])),
    "tanh": Activation(torch.tanh, torch.tanh_, ("tanh", [])),
    "plse": Activation(lambda x: torch.where(x < -4, 0.01 * (x + 4),
                                             torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5))),
    "stair": Activation(_stair),
    "hardtan": Activation(lambda x: torch.clamp(x, -1, 1), lambda y: y.clamp_(-1.0, 1.0), ("hardtanh", [-1.0, 1.0])),
    "lhtan": Activation(lambda x: torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x))),
    "swish": Activation(lambda x: x * torch.sigmoid(x), lambda y: F.silu(y, inplace=True), ("swish", [])),
    # darknet: x * tanh(softplus(x)), softplus = exp(x) below -20 (equal to log1p(exp(x)) in float32)
    "mish": Activation(mish, lambda y: F.mish(y, inplace=True), onnx=lambda x: x * torch.tanh(F.softplus(x))),
    "hard_mish": Activation(hard_mish, onnx=_hard_mish_onnx),
    "normalize_channels": Activation(_normalize_channels),
    "normalize_channels_softmax": Activation(lambda x: _normalize_channels_softmax(x, False)),
    "normalize_channels_softmax_maxval": Activation(lambda x: _normalize_channels_softmax(x, True)),
}.items():
    TABLE[_name] = _form


def _check_table():
    """Every name the parser can give has a reference implementation (an unknown one would fail at run time)."""
    parsed = set(ACTIVATIONS) - set(ACTIVATION_ALIASES)
    missing, extra = parsed - set(TABLE), set(TABLE) - parsed
    if missing or extra:
        raise ImportError(f"darknet_prn.activations: the table and graph.ACTIVATIONS disagree: missing "
                          f"{sorted(missing)}, not parsed {sorted(extra)}")


_check_table()


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "linear":
        return x
    return TABLE[name].ref(x)


def activate_inplace(y: torch.Tensor, name: str) -> torch.Tensor:
    """``activate`` in place where a form exists (``y`` must be the caller's own tensor)."""
    f = TABLE[name].inplace
    return f(y) if f is not None else activate(y, name)


def onnx_activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """``activate`` written with standard ONNX operators (numerically the same formula)."""
    f = TABLE[name].onnx
    return f(x) if f is not None else activate(x, name)
