"""The loss layers of a training forward: each turns Darknet's ``l.delta`` (minus the gradient it sends to its
input) into a torch loss term whose gradient is exactly that and whose value is Darknet's ``l.cost``.

``[yolo]`` (``yolo_loss``), ``[Gaussian_yolo]`` (``gaussian_loss``), ``[region]`` (``region_loss``), ``[detection]`` (``detection_loss``), ``[softmax]`` with net.truth (``softmax_x_ent``: delta ``t - p``, cost
``-log p`` at the labels) and ``[cost]`` (sse / masked / smooth; ``backward_cost_layer`` scales by ``scale``).
Darknet's ``[softmax]`` backward passes its delta on unchanged (no softmax Jacobian); the module does the same
in training mode.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DarknetError
from .detection_loss import DetectionParams, detection_delta
from .gaussian_loss import GaussianParams, gaussian_delta
from .region_loss import RegionParams, region_delta
from .yolo_loss import YoloParams, yolo_delta

LOSS_TYPES = ("yolo", "gaussian_yolo", "region", "detection", "softmax", "cost")
DETECTION_HEADS = ("yolo", "gaussian_yolo", "region", "detection")
UNSUPPORTED = {
    "contrastive": "[contrastive] (self-supervised embedding loss) training is not supported",
}
SECRET_NUM = -1234.0      # darknet.h: masked cost entries


def surrogate(x: torch.Tensor, delta: np.ndarray, cost: float, factor: float = 1.0) -> torch.Tensor:
    """A scalar with value ``cost`` and gradient ``-factor * delta`` with respect to ``x``."""
    d = torch.from_numpy(np.ascontiguousarray(delta, dtype=np.float32)).to(x.device, x.dtype).view_as(x)
    s = -(d * factor * x).sum()
    return s - s.detach() + cost


def yolo_head(layer, x, y, truth, net_w, net_h):
    prm = YoloParams.from_layer(layer)
    delta, st = yolo_delta(prm, y.detach().cpu().numpy(), truth, net_w, net_h)
    return surrogate(x, delta, st["cost"], prm.delta_normalizer), st


def gaussian_head(layer, x, y, truth, net_w, net_h):
    prm = GaussianParams.from_layer(layer)
    delta, st = gaussian_delta(prm, y.detach().cpu().numpy(), truth, net_w, net_h)
    return surrogate(x, delta, st["cost"], prm.delta_normalizer), st


def region_head(layer, x, y, truth, seen):
    prm = RegionParams.from_layer(layer)
    delta, st = region_delta(prm, y.detach().cpu().numpy(), truth, seen, tuple(layer.in_shape))
    return surrogate(x, delta, st["cost"]), st


def detection_head(layer, x, y, truth):
    prm = DetectionParams.from_layer(layer)
    delta, st = detection_delta(prm, y.detach().cpu().numpy().reshape(y.shape[0], -1), truth)
    return surrogate(x, delta, st["cost"]), st


def softmax_head(layer, x, y, truth):
    p = y.detach().cpu().numpy().reshape(y.shape[0], -1)
    if truth.shape != p.shape:
        raise DarknetError(f"truth is {tuple(truth.shape)} but [softmax] layer {layer.index} has {p.shape[1]} "
                           f"outputs per image (one-hot truth needs the same size)")
    delta = truth - p                                             # softmax_x_ent_cpu
    with np.errstate(divide="ignore"):
        err = np.where(truth != 0, -np.log(p), 0.0)
    cost = float(err.astype(np.float64).sum())
    return surrogate(x, delta, cost), dict(layer=layer.index, type="softmax", cost=cost)


def cost_terms(layer, x: np.ndarray, truth: np.ndarray):
    """``forward_cost_layer``: (delta, per-element error) of the [cost] input ``x`` (B, inputs)."""
    kind = layer.section.get_str("type", "sse")
    if truth.shape != x.shape:
        raise DarknetError(f"truth is {tuple(truth.shape)} but [cost] layer {layer.index} has {x.shape[1]} inputs "
                           f"per image")
    if kind == "masked":
        x = np.where(truth == SECRET_NUM, np.float32(SECRET_NUM), x)
    diff = (truth - x).astype(np.float32)
    if kind == "smooth":
        a = np.abs(diff)
        err = np.where(a < 1, diff * diff, 2 * a - 1)
        delta = np.where(a < 1, diff, np.where(diff > 0, 1.0, -1.0))
    else:
        err, delta = diff * diff, diff
    return delta.astype(np.float32), err.astype(np.float32)


def cost_head(layer, x, truth):
    xin = x.detach().cpu().numpy().reshape(x.shape[0], -1)
    delta, err = cost_terms(layer, xin, truth)
    cost = float(err.astype(np.float64).sum())
    scale = layer.section.get_float("scale", 1.0)
    return surrogate(x, delta, cost, scale), dict(layer=layer.index, type="cost", cost=cost)


def check_trainable(graph):
    """Refuses, with one clear line, cfgs whose loss layers cannot be trained here."""
    for l in graph.layers:
        if l.type in UNSUPPORTED:
            raise DarknetError(f"{UNSUPPORTED[l.type]} (layer {l.index})", l.section.path, l.section.line)
    if not any(l.type in LOSS_TYPES for l in graph.layers):
        raise DarknetError("the cfg has no loss layer ([yolo], [softmax] or [cost]): nothing to train",
                           graph.path)
