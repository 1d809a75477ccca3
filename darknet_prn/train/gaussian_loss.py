"""``[Gaussian_yolo]`` training deltas as Darknet writes them (``gaussian_yolo_layer.c``
``forward_gaussian_yolo_layer``, ``delta_gaussian_yolo_box``, ``delta_gaussian_yolo_class``,
``averages_gaussian_yolo_deltas``); entries per anchor: x, sigma_x, y, sigma_y, w, sigma_w, h, sigma_h, obj,
classes. No Darknet oracle covers them: a transcription of the C loops, tested against the Gaussian
negative log-likelihood gradient they approximate. Backward as ``backward_gaussian_yolo_layer_gpu``
(``delta_normalizer`` applied; the CPU build ignores it)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .box import box_giou, box_iou, dx_box_iou, iou_many
from .truth import image_boxes
from .yolo_loss import FLT_MAX, YoloParams, trained_anchors

SIGMA_CONST = 0.3
EPSI = 1e-9


@dataclass
class GaussianParams(YoloParams):
    uc_normalizer: float = 1.0
    yolo_point: str = "center"

    @classmethod
    def from_layer(cls, layer) -> "GaussianParams":
        base = YoloParams.from_layer(layer)
        s = layer.section
        point = s.get_str("yolo_point", "center")
        return cls(**vars(base), uc_normalizer=float(np.float32(s.get_float("uc_normalizer", 1.0))),
                   yolo_point=point if point in ("left_top", "right_bottom") else "center")


def _shift(prm, v, size):
    return v + size / 2 if prm.yolo_point == "left_top" else (v - size / 2 if prm.yolo_point == "right_bottom" else v)


def gaussian_delta(prm: GaussianParams, out: np.ndarray, truth: np.ndarray, net_w: int, net_h: int):
    B, _, lh, lw = out.shape
    n, C = len(prm.mask), prm.classes
    o = out.reshape(B, n, 9 + C, lh, lw).astype(np.float32, copy=False)
    d = np.zeros_like(o)
    biases = np.asarray(prm.anchors, np.float32)
    cm = prm.classes_multipliers
    on = np.float32(prm.obj_normalizer)
    st = dict(avg_iou=0.0, recall=0, recall75=0, avg_cat=0.0, avg_obj=0.0, avg_anyobj=0.0, count=0, class_count=0)

    def pred_box(b, mn, a, i, j):
        x = o[b, mn, :8, j, i].astype(np.float64)
        w = math.exp(x[4]) * float(biases[2 * a]) / net_w
        h = math.exp(x[6]) * float(biases[2 * a + 1]) / net_h
        return (_shift(prm, (i + x[0]) / lw, w), _shift(prm, (j + x[2]) / lh, h), w, h)

    def delta_box(b, mn, a, i, j, tb, scale, iou_norm):
        x = o[b, mn, :8, j, i].astype(np.float64)
        pred = pred_box(b, mn, a, i, j)
        iou = box_iou(pred, tb)
        pred = (pred[0], pred[1], pred[2] or 1.0, pred[3] or 1.0)
        tx, ty = tb[0] * lw - i, tb[1] * lh - j
        if prm.yolo_point == "left_top":
            tx, ty = (tb[0] - tb[2] / 2) * lw - i, (tb[1] - tb[3] / 2) * lh - j
        elif prm.yolo_point == "right_bottom":
            tx, ty = (tb[0] + tb[2] / 2) * lw - i, (tb[1] + tb[3] / 2) * lh - j
        tw = math.log(tb[2] * net_w / biases[2 * a])
        th = math.log(tb[3] * net_h / biases[2 * a + 1])
        mean, sig = [], []
        for t, mu, s in ((tx, x[0], x[1]), (ty, x[2], x[3]), (tw, x[4], x[5]), (th, x[6], x[7])):
            diff = t - mu
            e = diff / s
            nd = math.exp(e * e * -0.5) / (math.sqrt(math.pi * 2.0) * (s + SIGMA_CONST))
            temp = 0.5 / (nd + EPSI) * nd * scale
            mean.append(temp * e / s)
            sig.append(temp * (e * e / s - 1.0 / (s + SIGMA_CONST)))
        if prm.iou_loss != "mse":
            iou = box_giou(pred, tb)
            gx, gy, gw, gh = dx_box_iou(pred, tb, prm.iou_loss)
            if prm.yolo_point == "left_top":
                gx, gy = gx - gw / 2, gy - gh / 2
            elif prm.yolo_point == "right_bottom":
                gx, gy = gx + gw / 2, gy + gh / 2
            mean = [gx, gy, gw * math.exp(x[4]), gh * math.exp(x[6])]
        vals = [v * iou_norm for v in mean] + [v * prm.uc_normalizer for v in sig]
        vals = [0.0 if (math.isnan(v) or math.isinf(v)) else v for v in vals]
        if prm.max_delta != FLT_MAX:
            vals = [min(max(v, -prm.max_delta), prm.max_delta) for v in vals]
        dd = d[b, mn, :8, j, i]
        dd[[0, 2, 4, 6]] += np.asarray(vals[:4], np.float32)
        dd[[1, 3, 5, 7]] += np.asarray(vals[4:], np.float32)
        return iou

    def delta_class(b, mn, i, j, class_id, avg):
        p, dc = o[b, mn, 9:, j, i], d[b, mn, 9:, j, i]
        eps = prm.label_smooth_eps
        if dc[0]:                           # Darknet tests the slot's first class entry
            y = 1.0 * (1 - eps) + 0.5 * eps if eps else 1.0
            dc[class_id] = np.float32(y - p[class_id])
            if cm:
                dc[class_id] *= np.float32(cm[class_id])
        else:
            y = np.zeros(C, np.float32)
            y[class_id] = 1
            if eps:
                y = (y * np.float32(1 - eps) + np.float32(0.5 * eps)).astype(np.float32)
            dc[:] = y - p
            if cm:
                dc[class_id] *= np.float32(cm[class_id] * prm.cls_normalizer)
        if avg:
            st["avg_cat"] += float(p[class_id])

    def positive(b, mn, a, i, j, tb, class_id):
        mult = cm[class_id] if cm else 1.0
        iou = delta_box(b, mn, a, i, j, tb, 2 - tb[2] * tb[3], float(np.float32(prm.iou_normalizer * mult)))
        obj = o[b, mn, 8, j, i]
        st["avg_obj"] += float(obj)
        d[b, mn, 8, j, i] = np.float32(mult) * on * (np.float32(1) - obj)
        delta_class(b, mn, i, j, class_id, True)
        st["count"] += 1
        st["class_count"] += 1
        st["recall"] += iou > .5
        st["recall75"] += iou > .75
        st["avg_iou"] += iou

    aw = biases[0::2][prm.mask].reshape(n, 1, 1)
    ah = biases[1::2][prm.mask].reshape(n, 1, 1)
    ii = np.arange(lw, dtype=np.float32).reshape(1, 1, lw)
    jj = np.arange(lh, dtype=np.float32).reshape(1, lh, 1)
    for b in range(B):
        boxes = image_boxes(truth[b], prm.max_boxes)
        cls = boxes[:, 4].astype(np.int64) if len(boxes) else np.zeros(0, np.int64)
        tb_all = boxes[(cls >= 0) & (cls < C)]
        ob = o[b]
        pw = np.exp(ob[:, 4]) * aw / np.float32(net_w)
        ph = np.exp(ob[:, 6]) * ah / np.float32(net_h)
        px = _shift(prm, (ii + ob[:, 0]) / np.float32(lw), pw)
        py = _shift(prm, (jj + ob[:, 2]) / np.float32(lh), ph)
        obj = ob[:, 8]
        st["avg_anyobj"] += float(obj.astype(np.float64).sum())
        d[b, :, 8] = on * (np.float32(0) - obj)
        if len(tb_all):
            iou = iou_many(px, py, pw, ph, tb_all)
            best_iou = np.maximum(iou.max(0), 0)
            best_t = np.argmax(iou, 0)
            match = (ob[:, 9:] > np.float32(0.25)).any(1)
            best_match = np.where(match, best_iou, np.float32(0))
            for mn, j, i in zip(*np.nonzero(best_match > prm.ignore_thresh)):
                bm = float(best_match[mn, j, i])
                if prm.objectness_smooth:
                    d[b, mn, 8, j, i] = on * (np.float32(bm * bm) - obj[mn, j, i])
                    delta_class(b, mn, i, j, int(tb_all[best_t[mn, j, i], 4]), False)
                else:
                    d[b, mn, 8, j, i] = 0
            for mn, j, i in zip(*np.nonzero(best_iou > prm.truth_thresh)):
                bi = float(best_iou[mn, j, i])
                t = tb_all[best_t[mn, j, i]]
                class_id = int(t[4])
                d[b, mn, 8, j, i] = on * (np.float32(bi * bi if prm.objectness_smooth else 1) - obj[mn, j, i])
                delta_class(b, mn, i, j, class_id, False)
                mult = cm[class_id] if cm else 1.0
                if prm.objectness_smooth:
                    d[b, mn, 9 + class_id, j, i] = np.float32(mult * (bi * bi - o[b, mn, 9 + class_id, j, i]))
                tbox = tuple(float(v) for v in t[:4])
                delta_box(b, mn, prm.mask[mn], i, j, tbox, 2 - tbox[2] * tbox[3],
                          float(np.float32(prm.iou_normalizer * mult)))
        for t in tb_all:
            tbox = tuple(float(v) for v in t[:4])
            class_id = int(t[4])
            x, y = np.float32(t[0]), np.float32(t[1])
            if prm.yolo_point == "left_top":
                x, y = x - np.float32(t[2]) / 2, y - np.float32(t[3]) / 2
            elif prm.yolo_point == "right_bottom":
                x, y = x + np.float32(t[2]) / 2, y + np.float32(t[3]) / 2
            i = min(lw - 1, max(0, int(np.float32(x) * np.float32(lw))))
            j = min(lh - 1, max(0, int(np.float32(y) * np.float32(lh))))
            for mn, a in trained_anchors(prm, biases, net_w, net_h, tbox):
                positive(b, mn, a, i, j, tbox, class_id)
        db = d[b]                              # averages_gaussian_yolo_deltas, every slot
        k = (db[:, 9:] > 0).sum(1)
        db[:, :8] = np.where((k > 0)[:, None], db[:, :8] / np.maximum(k, 1)[:, None].astype(np.float32), db[:, :8])
    d64 = d.astype(np.float64)
    loss = float((d64 ** 2).sum())
    class_loss = float((d64[:, :, 8:] ** 2).sum())
    except_uc = float((d64[:, :, [0, 1, 2, 3]] ** 2).sum()) + class_loss
    uc_loss, iou_loss = loss - except_uc, except_uc - class_loss    # Darknet's names: entries 4..7 / 0..3
    count = st["count"] or 1
    cc = st["class_count"] or 1
    cells = lh * lw * n * B
    line = (f"Region {prm.index} Avg IOU: {st['avg_iou'] / count:f}, Class: {st['avg_cat'] / cc:f}, "
            f"Obj: {st['avg_obj'] / count:f}, No Obj: {st['avg_anyobj'] / cells:f}, .5R: {st['recall'] / count:f}, "
            f".75R: {st['recall75'] / count:f},  count: {st['count']}, class_loss = {class_loss / B:.2f}, "
            f"iou_loss = {iou_loss / B:.2f}, uc_loss = {uc_loss / B:.2f}, total_loss = {loss / B:.2f} ")
    return d.reshape(out.shape), dict(
        layer=prm.index, type="gaussian_yolo", cost=loss, loss=loss, classification_loss=class_loss,
        iou_loss=iou_loss, uc_loss=uc_loss, avg_iou=st["avg_iou"] / count, class_avg=st["avg_cat"] / cc,
        obj_avg=st["avg_obj"] / count, no_obj_avg=st["avg_anyobj"] / cells, recall50=st["recall"] / count,
        recall75=st["recall75"] / count, count=st["count"], line=line)
