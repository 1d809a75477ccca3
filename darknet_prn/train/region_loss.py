"""``[region]`` (YOLOv2) training deltas as Darknet writes them (``region_layer.c`` ``forward_region_layer``,
``delta_region_box``, ``delta_region_class``; ``DOABS`` = 1). No Darknet oracle covers them: this is a
transcription of the C loops (negatives vectorised), checked by the tests against a literal loop version and
for the properties the C code has. The delta is with respect to the layer's *input* (Darknet multiplies by the
logistic gradient itself), in the layer's (N, H*W, anchors, 5+classes) output order; ``region_head``
returns it in the input's (N, C, H, W) layout."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CfgError
from .box import box_iou, iou_many
from .truth import image_boxes


@dataclass
class RegionParams:
    index: int
    classes: int
    num: int
    coords: int
    anchors: list
    max_boxes: int = 200
    softmax: int = 0
    tree: dict | None = None
    rescore: int = 0
    thresh: float = 0.5
    classfix: int = 0
    coord_scale: float = 1.0
    object_scale: float = 1.0
    noobject_scale: float = 1.0
    class_scale: float = 1.0
    bias_match: int = 0
    focal_loss: int = 0

    @classmethod
    def from_layer(cls, layer) -> "RegionParams":
        s, p = layer.section, layer.p
        f32 = lambda v: float(np.float32(v))      # noqa: E731
        if p["coords"] != 4:
            raise CfgError("[region] training needs coords=4", s.path, s.line)
        if s.get_str("map") is not None:
            raise CfgError("[region] map= is not supported in training", s.path, s.line)
        return cls(index=layer.index, classes=p["classes"], num=p["num"], coords=p["coords"],
                   anchors=[f32(a) for a in p["anchors"]],
                   max_boxes=s.get_int("max", 200), softmax=p["softmax"], tree=p.get("tree"),
                   rescore=s.get_int("rescore", 0), thresh=f32(s.get_float("thresh", .5)),
                   classfix=s.get_int("classfix", 0), coord_scale=f32(s.get_float("coord_scale", 1)),
                   object_scale=f32(s.get_float("object_scale", 1)),
                   noobject_scale=f32(s.get_float("noobject_scale", 1)),
                   class_scale=f32(s.get_float("class_scale", 1)), bias_match=s.get_int("bias_match", 0),
                   focal_loss=s.get_int("focal_loss", 0))


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _region(prm, o, truth, seen):
    B, lh, lw, n, size = o.shape
    o = o.astype(np.float32, copy=False)
    d = np.zeros_like(o)
    biases = np.asarray(prm.anchors, np.float32)
    C = prm.classes
    tree = prm.tree
    st = dict(avg_iou=0.0, recall=0, avg_cat=0.0, avg_obj=0.0, avg_anyobj=0.0, count=0, class_count=0)

    def sig(v):
        return 1 / (1 + np.exp(-v.astype(np.float64)))

    def delta_box(b, j, i, a, tbox, scale):
        x = o[b, j, i, a, :4].astype(np.float64)
        sx, sy = _sig(x[0]), _sig(x[1])
        pred = ((i + sx) / lw, (j + sy) / lh, math.exp(x[2]) * biases[2 * a] / lw, math.exp(x[3]) * biases[2 * a + 1] / lh)
        iou = box_iou(pred, tbox)
        tx, ty = tbox[0] * lw - i, tbox[1] * lh - j
        tw = math.log(tbox[2] * lw / biases[2 * a])
        th = math.log(tbox[3] * lh / biases[2 * a + 1])
        d[b, j, i, a, :4] = np.array([scale * (tx - sx) * (1 - sx) * sx, scale * (ty - sy) * (1 - sy) * sy,
                                      scale * (tw - x[2]), scale * (th - x[3])], np.float32)
        return iou

    def delta_class(b, j, i, a, class_id, scale):
        p = o[b, j, i, a, 5:]
        dc = d[b, j, i, a, 5:]
        if tree is not None:
            pred = 1.0
            parent = tree["parent"]
            group = np.repeat(np.arange(len(tree["group_size"])), tree["group_size"])
            while class_id >= 0:
                pred *= float(p[class_id])
                g = group[class_id]
                off, gs = tree["group_offset"][g], tree["group_size"][g]
                dc[off:off + gs] = np.float32(scale) * (np.float32(0) - p[off:off + gs])
                dc[class_id] = np.float32(scale) * (np.float32(1) - p[class_id])
                class_id = parent[class_id]
            st["avg_cat"] += pred
            return
        y = np.zeros(C, np.float32)
        y[class_id] = 1
        dc[:] = np.float32(scale) * (y - p)
        if prm.focal_loss:
            pt = float(p[class_id]) + 0.000000000000001
            dc *= np.float32(0.5 * -(1 - pt) * (2 * pt * math.log(pt) + pt - 1))
        st["avg_cat"] += float(p[class_id])

    jj = np.arange(lh, dtype=np.float32).reshape(lh, 1, 1)
    ii = np.arange(lw, dtype=np.float32).reshape(1, lw, 1)
    aw = biases[0::2][:n].reshape(1, 1, n)
    ah = biases[1::2][:n].reshape(1, 1, n)
    for b in range(B):
        boxes = image_boxes(truth[b], prm.max_boxes)
        cls = boxes[:, 4].astype(np.int64) if len(boxes) else np.zeros(0, np.int64)
        ob = o[b]
        obj = ob[..., 4]
        st["avg_anyobj"] += float(obj.astype(np.float64).sum())
        grad = obj * (np.float32(1) - obj)
        tb = boxes[cls < C]                                       # the cell loop skips class_id >= classes
        px = ((ii + sig(ob[..., 0])) / lw).astype(np.float32)
        py = ((jj + sig(ob[..., 1])) / lh).astype(np.float32)
        pw = (np.exp(ob[..., 2]) * aw / np.float32(lw)).astype(np.float32)
        ph = (np.exp(ob[..., 3]) * ah / np.float32(lh)).astype(np.float32)
        if len(tb):
            iou = iou_many(px, py, pw, ph, tb)
            best = np.maximum(iou.max(0), 0)
            best_cls = tb[np.argmax(iou, 0), 4].astype(np.int64)
        else:
            best = np.zeros_like(obj)
            best_cls = np.full(obj.shape, -1)
        ns = np.float32(prm.noobject_scale)
        if prm.classfix == -1:
            d[b, ..., 4] = ns * ((best - obj) * grad)
        else:
            d[b, ..., 4] = np.where(best > prm.thresh, np.float32(0), ns * ((np.float32(0) - obj) * grad))
            if prm.classfix > 0:
                for j, i, a in zip(*np.nonzero(best > prm.thresh)):
                    sc = prm.class_scale * (float(obj[j, i, a]) if prm.classfix == 2 else 1.0)
                    delta_class(b, j, i, a, int(best_cls[j, i, a]), sc)
                    st["class_count"] += 1
        if seen < 12800:                  # pull every box towards its anchor at the cell centre
            sx, sy = sig(ob[..., 0]), sig(ob[..., 1])
            d[b, ..., 0] = (.01 * (.5 - sx) * (1 - sx) * sx).astype(np.float32)
            d[b, ..., 1] = (.01 * (.5 - sy) * (1 - sy) * sy).astype(np.float32)
            d[b, ..., 2] = np.float32(.01) * (np.float32(0) - ob[..., 2])
            d[b, ..., 3] = np.float32(.01) * (np.float32(0) - ob[..., 3])
        for t in boxes:
            class_id = int(t[4])
            if class_id >= C:
                continue
            tbox = tuple(float(v) for v in t[:4])
            i = min(int(np.float32(t[0]) * np.float32(lw)), lw - 1)
            j = min(int(np.float32(t[1]) * np.float32(lh)), lh - 1)
            best_iou, best_n, found = 0.0, 0, False
            for a in range(n):
                if prm.bias_match:
                    pw_, ph_ = float(biases[2 * a]) / lw, float(biases[2 * a + 1]) / lh
                else:
                    x = o[b, j, i, a].astype(np.float64)
                    pw_ = math.exp(x[2]) * biases[2 * a] / lw
                    ph_ = math.exp(x[3]) * biases[2 * a + 1] / lh
                v = box_iou((0.0, 0.0, pw_, ph_), (0.0, 0.0, tbox[2], tbox[3]))
                if v > best_iou:
                    best_iou, best_n, found = v, a, True
            if found:
                bb, bj, bi, ba = b, j, i, best_n
            else:                         # Darknet's best_index stays 0: the batch's first slot
                bb, bj, bi, ba = 0, 0, 0, 0
            iou = delta_box(bb, bj, bi, ba, tbox, prm.coord_scale)
            st["recall"] += iou > .5
            st["avg_iou"] += iou
            ov = o[bb, bj, bi, ba, 4]
            st["avg_obj"] += float(ov)
            target = np.float32(iou) if prm.rescore else np.float32(1)
            d[bb, bj, bi, ba, 4] = np.float32(prm.object_scale) * (target - ov) * (ov * (np.float32(1) - ov))
            delta_class(bb, bj, bi, ba, class_id, prm.class_scale)
            st["count"] += 1
            st["class_count"] += 1
    cost = float((d.astype(np.float64) ** 2).sum())
    count = st["count"] or 1
    cc = st["class_count"] or 1
    cells = lh * lw * n * B
    line = (f"Region Avg IOU: {st['avg_iou'] / count:f}, Class: {st['avg_cat'] / cc:f}, "
            f"Obj: {st['avg_obj'] / count:f}, No Obj: {st['avg_anyobj'] / cells:f}, "
            f"Avg Recall: {st['recall'] / count:f},  count: {st['count']}")
    return d.reshape(B, lh * lw, n, size), dict(
        layer=prm.index, type="region", cost=cost, avg_iou=st["avg_iou"] / count, class_avg=st["avg_cat"] / cc,
        obj_avg=st["avg_obj"] / count, no_obj_avg=st["avg_anyobj"] / cells, recall50=st["recall"] / count,
        count=st["count"], line=line)


def region_delta(prm: RegionParams, out_flat: np.ndarray, truth, seen: int, shape):
    """``l.delta`` of a training forward in the layer input's (B, C, H, W) layout (Darknet flattens it back,
    ``flatten(l.delta, ..., 0)``) and the statistics. out_flat: the layer's output (B, h*w, num, 5+classes)
    ([region]'s l.output: x, y, w, h raw, objectness logistic, classes softmax); shape: the input's (C, H, W)."""
    c, h, w = shape
    B = out_flat.shape[0]
    o = out_flat.reshape(B, h, w, prm.num, -1)
    d, st = _region(prm, o, truth, seen)
    d = d.reshape(B, h * w, c).transpose(0, 2, 1).reshape(B, c, h, w)
    return np.ascontiguousarray(d), st
