"""``[detection]`` (YOLOv1) training deltas as Darknet writes them (``detection_layer.c``
``forward_detection_layer``) and its grid truth (``data.c`` ``fill_truth_region``). No Darknet oracle covers
them: a transcription of the C loops, checked by the tests against the closed form they are the gradient of.
``random`` (a rand() anchor choice while seen < 64000) is refused."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CfgError
from .box import box_iou
from .truth import image_boxes


@dataclass
class DetectionParams:
    index: int
    classes: int
    num: int
    side: int
    coords: int
    softmax: int = 0
    sqrt: int = 0
    rescore: int = 0
    forced: int = 0
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0

    @classmethod
    def from_layer(cls, layer) -> "DetectionParams":
        s, p = layer.section, layer.p
        f32 = lambda v: float(np.float32(v))      # noqa: E731
        if s.get_float("random", 0):
            raise CfgError("[detection] random=1 (rand() box choice) is not supported in training", s.path, s.line)
        if s.get_int("coords", 1) != 4:
            raise CfgError("[detection] training needs coords=4", s.path, s.line)
        return cls(index=layer.index, classes=p["classes"], num=s.get_int("num", 1), side=p["side"], coords=4,
                   softmax=p["softmax"], sqrt=s.get_int("sqrt", 0), rescore=s.get_int("rescore", 0),
                   forced=s.get_int("forced", 0), coord_scale=f32(s.get_float("coord_scale", 1)),
                   object_scale=f32(s.get_float("object_scale", 1)),
                   noobject_scale=f32(s.get_float("noobject_scale", 1)),
                   class_scale=f32(s.get_float("class_scale", 1)))


def grid_truth(prm: DetectionParams, truth: np.ndarray) -> np.ndarray:
    """``fill_truth_region``: per image side*side cells of (1 + classes + 4): is_obj, one-hot class, x, y (offset
    in the cell), w, h; the first box of a cell wins, boxes under 0.001 wide or high are dropped."""
    S, C = prm.side, prm.classes
    out = np.zeros((truth.shape[0], S * S, 5 + C), np.float32)
    for b in range(truth.shape[0]):
        for x, y, w, h, c in image_boxes(truth[b], truth.shape[1] // 6):
            if w < .001 or h < .001:
                continue
            col, row = int(np.float32(x) * S), int(np.float32(y) * S)
            cell = out[b, col + row * S]
            if cell[0]:
                continue
            cell[0] = 1
            if int(c) < C:
                cell[1 + int(c)] = 1
            cell[1 + C:] = (np.float32(x) * S - col, np.float32(y) * S - row, w, h)
    return out


def _rmse(a, b):
    return math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2 + (a[3] - b[3]) ** 2)


def detection_delta(prm: DetectionParams, out: np.ndarray, truth: np.ndarray):
    """out: (B, inputs) float32, the layer's training output; truth: (B, T) boxes (net.truth layout).
    Returns (delta (B, inputs), stats)."""
    S, C, n = prm.side, prm.classes, prm.num
    L = S * S
    B = out.shape[0]
    o = out.astype(np.float32, copy=False)
    d = np.zeros_like(o)
    grid = grid_truth(prm, truth)
    st = dict(avg_iou=0.0, avg_cat=0.0, avg_allcat=0.0, avg_obj=0.0, avg_anyobj=0.0, count=0)
    conf0 = L * C
    box0 = L * (C + n)
    ns = np.float32(prm.noobject_scale)
    for b in range(B):
        ob, db = o[b], d[b]
        db[conf0:box0] = ns * (np.float32(0) - ob[conf0:box0])
        st["avg_anyobj"] += float(ob[conf0:box0].astype(np.float64).sum())
        for i in np.nonzero(grid[b, :, 0])[0]:
            t = grid[b, i]
            ci = i * C
            db[ci:ci + C] = np.float32(prm.class_scale) * (t[1:1 + C] - ob[ci:ci + C])
            st["avg_cat"] += float((ob[ci:ci + C] * (t[1:1 + C] != 0)).sum())
            st["avg_allcat"] += float(ob[ci:ci + C].astype(np.float64).sum())
            tbox = (float(t[1 + C]) / S, float(t[2 + C]) / S, float(t[3 + C]), float(t[4 + C]))

            def pred(j):
                k = box0 + (i * n + j) * 4
                x, y, w, h = (float(v) for v in ob[k:k + 4])
                if prm.sqrt:
                    w, h = w * w, h * h
                return (x / S, y / S, w, h)

            best, best_iou, best_rmse = -1, 0.0, 20.0
            for j in range(n):
                p = pred(j)
                iou, rmse = box_iou(p, tbox), _rmse(p, tbox)
                if best_iou > 0 or iou > 0:
                    if iou > best_iou:
                        best_iou, best = iou, j
                elif rmse < best_rmse:
                    best_rmse, best = rmse, j
            if prm.forced:
                best = 1 if tbox[2] * tbox[3] < .1 else 0
            iou = box_iou(pred(best), tbox)
            pi = conf0 + i * n + best
            st["avg_obj"] += float(ob[pi])
            target = np.float32(iou) if prm.rescore else np.float32(1)
            db[pi] = np.float32(prm.object_scale) * (target - ob[pi])
            k = box0 + (i * n + best) * 4
            tb = t[1 + C:5 + C].copy()
            if prm.sqrt:
                tb[2:] = np.sqrt(tb[2:])
            db[k:k + 4] = np.float32(prm.coord_scale) * (tb - ob[k:k + 4])
            st["avg_iou"] += iou
            st["count"] += 1
    cost = float((d.astype(np.float64) ** 2).sum())
    cnt = st["count"] or 1
    line = (f"Detection Avg IOU: {st['avg_iou'] / cnt:f}, Pos Cat: {st['avg_cat'] / cnt:f}, "
            f"All Cat: {st['avg_allcat'] / (cnt * C):f}, Pos Obj: {st['avg_obj'] / cnt:f}, "
            f"Any Obj: {st['avg_anyobj'] / (B * L * n):f}, count: {st['count']}")
    return d, dict(layer=prm.index, type="detection", cost=cost, avg_iou=st["avg_iou"] / cnt,
                   class_avg=st["avg_cat"] / cnt, obj_avg=st["avg_obj"] / cnt,
                   no_obj_avg=st["avg_anyobj"] / (B * L * n), count=st["count"], line=line)
