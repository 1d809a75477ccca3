"""Darknet's box overlap measures and their hand-derived gradients (``box.c``): ``box_iou``, ``box_giou``,
``box_diou``, ``box_ciou`` (scalar, and ``iou_many`` vectorised for the negatives) and ``dx_box_iou`` (the
gradient ``[yolo]`` writes as its box delta for iou_loss=iou/giou/diou/ciou). Boxes are (x, y, w, h) centres."""
from __future__ import annotations

import math

import numpy as np

IOU_KINDS = ("iou", "giou", "mse", "diou", "ciou")
_PI = math.pi      # box.c's M_PI (glibc's; box.c falls back to 3.141592 only without it)


def _overlap(x1, w1, x2, w2):
    left = max(x1 - w1 / 2, x2 - w2 / 2)
    right = min(x1 + w1 / 2, x2 + w2 / 2)
    return right - left


def box_intersection(a, b):
    w = _overlap(a[0], a[2], b[0], b[2])
    h = _overlap(a[1], a[3], b[1], b[3])
    if w < 0 or h < 0:
        return 0.0
    return w * h


def box_union(a, b):
    return a[2] * a[3] + b[2] * b[3] - box_intersection(a, b)


def box_iou(a, b):
    i = box_intersection(a, b)
    u = box_union(a, b)
    if i == 0 or u == 0:
        return 0.0
    return i / u


def _enclosing(a, b):
    top = min(a[1] - a[3] / 2, b[1] - b[3] / 2)
    bot = max(a[1] + a[3] / 2, b[1] + b[3] / 2)
    left = min(a[0] - a[2] / 2, b[0] - b[2] / 2)
    right = max(a[0] + a[2] / 2, b[0] + b[2] / 2)
    return right - left, bot - top


def box_giou(a, b):
    w, h = _enclosing(a, b)
    c = w * h
    iou = box_iou(a, b)
    if c == 0:
        return iou
    return iou - (c - box_union(a, b)) / c


def box_diou(a, b):
    w, h = _enclosing(a, b)
    c = w * w + h * h
    iou = box_iou(a, b)
    if c == 0:
        return iou
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    return iou - (d / c) ** 0.6


def box_ciou(a, b):
    w, h = _enclosing(a, b)
    c = w * w + h * h
    iou = box_iou(a, b)
    if c == 0:
        return iou
    d = ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / c
    ar = 4 / (_PI * _PI) * (math.atan(b[2] / b[3]) - math.atan(a[2] / a[3])) ** 2
    alpha = ar / (1 - iou + ar + 0.000001)
    return iou - (d + alpha * ar)


def box_iou_kind(a, b, kind: str):
    return {"giou": box_giou, "diou": box_diou, "ciou": box_ciou}.get(kind, box_iou)(a, b)


def iou_many(px, py, pw, ph, truths: np.ndarray) -> np.ndarray:
    """box_iou of every predicted box (arrays of one shape S) with every truth row (T, >=4): (T,) + S, float32."""
    t = truths[:, :4].astype(np.float32).reshape((-1, 4) + (1,) * px.ndim)
    tx, ty, tw, th = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    half = np.float32(0.5)
    iw = np.minimum(px + pw * half, tx + tw * half) - np.maximum(px - pw * half, tx - tw * half)
    ih = np.minimum(py + ph * half, ty + th * half) - np.maximum(py - ph * half, ty - th * half)
    inter = np.where((iw < 0) | (ih < 0), np.float32(0), iw * ih)
    union = pw * ph + tw * th - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((inter == 0) | (union == 0), np.float32(0), inter / union)
    return iou.astype(np.float32)


def dx_box_iou(pred, truth, kind: str):
    """box.c ``dx_box_iou``: (dx, dy, dw, dh) of the IoU (giou/diou/ciou) of ``pred`` w.r.t. its centre/size."""
    px, py, pw, ph = pred
    tx, ty, tw, th = truth
    pt_, pb_ = py - ph / 2, py + ph / 2
    pl_, pr_ = px - pw / 2, px + pw / 2
    pred_t, pred_b = min(pt_, pb_), max(pt_, pb_)
    pred_l, pred_r = min(pl_, pr_), max(pl_, pr_)
    t_top, t_bot = ty - th / 2, ty + th / 2
    t_left, t_right = tx - tw / 2, tx + tw / 2
    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_bot - t_top) * (t_right - t_left)
    Ih = min(pred_b, t_bot) - max(pred_t, t_top)
    Iw = min(pred_r, t_right) - max(pred_l, t_left)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) ** 2 + (py - ty) ** 2
    giou_Cw = max(pred_r, t_right) - min(pred_l, t_left)
    giou_Ch = max(pred_b, t_bot) - min(pred_t, t_top)
    giou_C = giou_Cw * giou_Ch
    dX = {"t": -(pred_r - pred_l), "b": pred_r - pred_l, "l": -(pred_b - pred_t), "r": pred_b - pred_t}
    dI = {"t": -Iw if pred_t > t_top else 0.0, "b": Iw if pred_b < t_bot else 0.0,
          "l": -Ih if pred_l > t_left else 0.0, "r": Ih if pred_r < t_right else 0.0}
    dU = {k: dX[k] - dI[k] for k in "tblr"}
    dC = {"t": -giou_Cw if pred_t < t_top else 0.0, "b": giou_Cw if pred_b > t_bot else 0.0,
          "l": -giou_Ch if pred_l < t_left else 0.0, "r": giou_Ch if pred_r > t_right else 0.0}
    p = {k: ((U * dI[k]) - (I * dU[k])) / (U * U) if U > 0 else 0.0 for k in "tblr"}
    if not pt_ < pb_:
        p["t"] = p["b"]
    if not pl_ < pr_:
        p["l"] = p["r"]
    if kind == "giou":
        g = {k: ((giou_C * dU[k]) - (U * dC[k])) / (giou_C * giou_C) if giou_C != 0 else math.nan for k in "tblr"}
        if giou_C > 0:
            p = {k: p[k] + g[k] for k in "tblr"}
        if Iw <= 0 or Ih <= 0:
            p = dict(g)
    Cw, Ch = _enclosing(pred, truth)
    C = Cw * Cw + Ch * Ch
    dCw_dx = (1.0 if pred_r > t_right else 0.0) - (1.0 if pred_l < t_left else 0.0)
    dCw_dw = (0.5 if pred_r > t_right else 0.0) - (-0.5 if pred_l < t_left else 0.0)
    dCh_dy = (1.0 if pred_b > t_bot else 0.0) - (1.0 if pred_t < t_top else 0.0)
    dCh_dh = (0.5 if pred_b > t_bot else 0.0) - (-0.5 if pred_t < t_top else 0.0)
    p_dx = p["l"] + p["r"]
    p_dy = p["t"] + p["b"]
    p_dw = p["r"] - p["l"]
    p_dh = p["b"] - p["t"]
    if kind in ("diou", "ciou"):
        ar_w = ar_h = 0.0
        if kind == "ciou":
            d_at = math.atan(tw / th) - math.atan(pw / ph)
            ar_loss = 4 / (_PI * _PI) * d_at * d_at
            alpha = ar_loss / (1 - (I / U if U else math.nan) + ar_loss + 0.000001)
            ar_w = alpha * 8 / (_PI * _PI) * d_at * ph
            ar_h = alpha * -8 / (_PI * _PI) * d_at * pw
        if C != 0:
            ddx = (2 * (tx - px) * C - (2 * Cw * dCw_dx) * S) / (C * C)
            ddy = (2 * (ty - py) * C - (2 * Ch * dCh_dy) * S) / (C * C)
            ddw = (2 * Cw * dCw_dw) * S / (C * C) + ar_w
            ddh = (2 * Ch * dCh_dh) * S / (C * C) + ar_h
        else:
            ddx = ddy = ddw = ddh = math.nan
        if C > 0:
            p_dx, p_dy, p_dw, p_dh = p_dx + ddx, p_dy + ddy, p_dw + ddw, p_dh + ddh
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = ddx, ddy, ddw, ddh
    return p_dx, p_dy, p_dw, p_dh
