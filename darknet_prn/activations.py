"""Darknet's activation functions (activations.h / activations.c) in torch, with Darknet's formulas."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


_FUNCS = {
    "linear": lambda x: x,
    "logistic": torch.sigmoid,
    "loggy": lambda x: 2 * torch.sigmoid(x) - 1,
    "relu": F.relu,
    "relu6": lambda x: torch.clamp(x, 0, 6),
    "elu": lambda x: torch.where(x >= 0, x, torch.expm1(x)),
    "selu": lambda x: torch.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * torch.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.tanh(0.797885 * x + 0.035677 * x * x * x)),
    "relie": lambda x: torch.where(x > 0, x, 0.01 * x),
    "ramp": lambda x: x * (x > 0) + 0.1 * x,
    "leaky": lambda x: F.leaky_relu(x, 0.1),
    "tanh": torch.tanh,
    "plse": lambda x: torch.where(x < -4, 0.01 * (x + 4), torch.where(x > 4, 0.01 * (x - 4) + 1, 0.125 * x + 0.5)),
    "stair": _stair,
    "hardtan": lambda x: torch.clamp(x, -1, 1),
    "lhtan": lambda x: torch.where(x < 0, 0.001 * x, torch.where(x > 1, 0.001 * (x - 1) + 1, x)),
    "swish": lambda x: x * torch.sigmoid(x),
    "mish": mish,
    "hard_mish": hard_mish,
    "normalize_channels": _normalize_channels,
    "normalize_channels_softmax": lambda x: _normalize_channels_softmax(x, False),
    "normalize_channels_softmax_maxval": lambda x: _normalize_channels_softmax(x, True),
}


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "linear":
        return x
    return _FUNCS[name](x)
