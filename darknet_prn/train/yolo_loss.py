"""``[yolo]`` training deltas exactly as Darknet writes them (``yolo_layer.c`` ``forward_yolo_layer``,
``process_batch``, ``delta_yolo_box``, ``delta_yolo_class``, ``averages_yolo_deltas``).

Darknet's ``l.delta`` is not the gradient of a closed-form loss: it is computed here (numpy, float32 like
Darknet's buffers; the per-truth loops in Darknet's order) and turned into a loss whose gradient with
respect to the head's input is ``-delta_normalizer * delta`` (``backward_yolo_layer_gpu``) and whose value is
Darknet's ``l.cost``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CfgError
from .box import IOU_KINDS, box_giou, box_iou, box_iou_kind, dx_box_iou, iou_many
from .truth import image_boxes

FLT_MAX = float(np.finfo(np.float32).max)


@dataclass
class YoloParams:
    """The keys of ``parse_yolo`` that change the delta (defaults as Darknet's)."""
    index: int
    classes: int
    mask: list
    anchors: list            # l.biases: total*2 floats (w, h in network pixels)
    max_boxes: int = 200
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: str = "iou"
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    delta_normalizer: float = 1.0
    scale_x_y: float = 1.0
    new_coords: int = 0
    objectness_smooth: int = 0
    label_smooth_eps: float = 0.0
    focal_loss: int = 0
    max_delta: float = FLT_MAX
    classes_multipliers: list | None = None

    @classmethod
    def from_layer(cls, layer) -> "YoloParams":
        s, p = layer.section, layer.p
        f32 = lambda v: float(np.float32(v))      # noqa: E731  (Darknet keeps them as float)
        kind = s.get_str("iou_loss", "mse")
        kind = kind if kind in IOU_KINDS else "iou"       # parse_yolo: anything else is IOU
        tkind = s.get_str("iou_thresh_kind", "iou")
        tkind = tkind if tkind in ("iou", "giou", "diou", "ciou") else "iou"
        max_delta = f32(s.get_float("max_delta", FLT_MAX))
        prm = cls(index=layer.index, classes=p["classes"], mask=list(p["mask"]),
                  anchors=[f32(a) for a in p["anchors"]], max_boxes=s.get_int("max", 200),
                  ignore_thresh=f32(s.get_float("ignore_thresh", 0.5)), truth_thresh=f32(s.get_float("truth_thresh", 1)),
                  iou_thresh=f32(s.get_float("iou_thresh", 1)), iou_thresh_kind=tkind, iou_loss=kind,
                  iou_normalizer=f32(s.get_float("iou_normalizer", 0.75)),
                  obj_normalizer=f32(s.get_float("obj_normalizer", 1)),
                  cls_normalizer=f32(s.get_float("cls_normalizer", 1)),
                  delta_normalizer=f32(s.get_float("delta_normalizer", 1)), scale_x_y=f32(p["scale_x_y"]),
                  new_coords=p["new_coords"], objectness_smooth=s.get_int("objectness_smooth", 0),
                  label_smooth_eps=f32(s.get_float("label_smooth_eps", 0)), focal_loss=s.get_int("focal_loss", 0),
                  max_delta=max_delta)
        cpc = s.get_ints("counters_per_class")
        if cpc is not None:
            if len(cpc) != prm.classes:
                raise CfgError(f"[yolo] counters_per_class has {len(cpc)} values, classes={prm.classes}",
                               s.path, s.line)
            cpc = [max(1, c) for c in cpc]
            top = max(cpc)
            prm.classes_multipliers = [f32(min(f32(top / c), max_delta)) for c in cpc]
        if s.get_str("map") is not None:
            raise CfgError("[yolo] map= (class id remapping) is not supported in training", s.path, s.line)
        return prm


def trained_anchors(prm, biases, net_w, net_h, tbox):
    """The (mask index, anchor) slots a truth trains, in Darknet's order: the best anchor over *all* anchors by
    shape IoU (only if it is in this layer's mask), then with ``iou_thresh`` < 1 every other mask anchor whose
    ``iou_thresh_kind`` overlap with the truth's shape exceeds it."""
    total = len(biases) // 2
    shift = (0.0, 0.0, tbox[2], tbox[3])
    anchors = [(0.0, 0.0, float(np.float32(biases[2 * a] / np.float32(net_w))),
                float(np.float32(biases[2 * a + 1] / np.float32(net_h)))) for a in range(total)]
    best, best_n = 0.0, 0
    for a in range(total):
        v = box_iou(anchors[a], shift)
        if v > best:
            best, best_n = v, a
    out = [(prm.mask.index(best_n), best_n)] if best_n in prm.mask else []
    if prm.iou_thresh < 1.0:
        out += [(prm.mask.index(a), a) for a in range(total) if a != best_n and a in prm.mask
                and box_iou_kind(anchors[a], shift, prm.iou_thresh_kind) > prm.iou_thresh]
    return out


def _float_to_int(v: float) -> int:
    return int(v)            # C's (int) conversion truncates toward zero


def yolo_delta(prm: YoloParams, out: np.ndarray, truth: np.ndarray, net_w: int, net_h: int):
    """``l.delta`` (same shape as ``out``, float32) and Darknet's statistics for a training forward.

    out: (B, n*(5+classes), h, w) float32, the [yolo] layer's training output (``l.output``);
    truth: (B, T) float32 in Darknet's net.truth layout."""
    B, _, lh, lw = out.shape
    n, C = len(prm.mask), prm.classes
    o = out.reshape(B, n, 5 + C, lh, lw).astype(np.float32, copy=False)
    d = np.zeros_like(o)
    biases = np.asarray(prm.anchors, np.float32)
    aw = biases[0::2][prm.mask].reshape(n, 1, 1)
    ah = biases[1::2][prm.mask].reshape(n, 1, 1)
    ii = np.arange(lw, dtype=np.float32).reshape(1, 1, lw)
    jj = np.arange(lh, dtype=np.float32).reshape(1, lh, 1)
    st = dict(tot_iou=0.0, tot_iou_loss=0.0, tot_giou=0.0, tot_giou_loss=0.0, count=0, class_count=0,
              avg_cat=0.0, avg_obj=0.0, avg_anyobj=0.0, recall=0, recall75=0, total_bbox=0, rewritten_bbox=0)
    cm = prm.classes_multipliers
    on = np.float32(prm.obj_normalizer)

    def pred_box(b, mn, anchor, i, j):
        x = o[b, mn, :4, j, i].astype(np.float64)
        if prm.new_coords:
            bw = x[2] * x[2] * 4 * float(biases[2 * anchor]) / net_w
            bh = x[3] * x[3] * 4 * float(biases[2 * anchor + 1]) / net_h
        else:
            bw = math.exp(x[2]) * float(biases[2 * anchor]) / net_w
            bh = math.exp(x[3]) * float(biases[2 * anchor + 1]) / net_h
        return ((i + x[0]) / lw, (j + x[1]) / lh, bw, bh)

    def delta_box(b, mn, anchor, i, j, truth_box, scale, iou_normalizer):
        dd = d[b, mn, :4, j, i]
        if dd.any():
            st["rewritten_bbox"] += 1
        pred = pred_box(b, mn, anchor, i, j)
        ious = (box_iou(pred, truth_box), box_giou(pred, truth_box))
        pw, ph = pred[2] or 1.0, pred[3] or 1.0           # avoid nan in dx_box_iou
        x = o[b, mn, :4, j, i].astype(np.float64)
        if prm.iou_loss == "mse":
            tx = truth_box[0] * lw - i
            ty = truth_box[1] * lh - j
            if prm.new_coords:
                tw = math.sqrt(truth_box[2] * net_w / (4 * biases[2 * anchor]))
                th = math.sqrt(truth_box[3] * net_h / (4 * biases[2 * anchor + 1]))
            else:
                tw = math.log(truth_box[2] * net_w / biases[2 * anchor])
                th = math.log(truth_box[3] * net_h / biases[2 * anchor + 1])
            dd += np.float32(scale * iou_normalizer) * (np.array([tx, ty, tw, th]) - x).astype(np.float32)
        else:
            g = list(dx_box_iou((pred[0], pred[1], pw, ph), truth_box, prm.iou_loss))
            if not prm.new_coords:
                g[2] *= math.exp(x[2])
                g[3] *= math.exp(x[3])
            g = [v * iou_normalizer for v in g]
            g = [0.0 if (math.isnan(v) or math.isinf(v)) else v for v in g]
            if prm.max_delta != FLT_MAX:
                g = [min(max(v, -prm.max_delta), prm.max_delta) for v in g]
            dd += np.asarray(g, np.float32)
        st["total_bbox"] += 1
        return ious

    def delta_class(b, mn, i, j, class_id, avg):
        p = o[b, mn, 5:, j, i]
        dc = d[b, mn, 5:, j, i]
        eps = prm.label_smooth_eps
        if dc[class_id]:
            y = 1.0 * (1 - eps) + 0.5 * eps if eps else 1.0
            r = np.float32(y - p[class_id])
            if np.isfinite(r):
                dc[class_id] = r
            if cm:
                dc[class_id] *= np.float32(cm[class_id])
            if avg:
                st["avg_cat"] += float(p[class_id])
            return
        if prm.focal_loss:
            pt = float(p[class_id]) + 0.000000000000001
            grad = -(1 - pt) * (2 * pt * math.log(pt) + pt - 1)
            y = np.zeros(C, np.float32)
            y[class_id] = 1
            dc[:] = ((y - p) * np.float32(0.5 * grad)).astype(np.float32)
        else:
            y = np.zeros(C, np.float32)
            y[class_id] = 1
            if eps:
                y = (y * np.float32(1 - eps) + np.float32(0.5 * eps)).astype(np.float32)
            r = y - p
            ok = np.isfinite(r)
            dc[ok] = r[ok]
            if cm:
                dc[class_id] *= np.float32(cm[class_id] * prm.cls_normalizer)
        if avg:
            st["avg_cat"] += float(p[class_id])

    def positive(b, mn, anchor, i, j, tbox, class_id):
        """The shared body of the best-anchor and iou_thresh positives."""
        mult = cm[class_id] if cm else 1.0
        ious = delta_box(b, mn, anchor, i, j, tbox, 2 - tbox[2] * tbox[3], float(np.float32(prm.iou_normalizer * mult)))
        st["tot_iou"] += ious[0]
        st["tot_iou_loss"] += 1 - ious[0]
        st["tot_giou"] += ious[1]
        st["tot_giou_loss"] += 1 - ious[1]
        obj = o[b, mn, 4, j, i]
        st["avg_obj"] += float(obj)
        dobj = np.float32(mult) * on * (np.float32(1) - obj)
        if prm.objectness_smooth:
            if d[b, mn, 4, j, i] == 0:
                d[b, mn, 4, j, i] = dobj
        else:
            d[b, mn, 4, j, i] = dobj
        delta_class(b, mn, i, j, class_id, True)
        st["count"] += 1
        st["class_count"] += 1
        st["recall"] += ious[0] > .5
        st["recall75"] += ious[0] > .75

    for b in range(B):
        boxes = image_boxes(truth[b], prm.max_boxes)
        cls_ids = boxes[:, 4].astype(np.int64) if len(boxes) else np.zeros(0, np.int64)
        valid = (cls_ids >= 0) & (cls_ids < C)
        tb = boxes[valid]
        # -- negatives: every cell x anchor ----------------------------------------------------------------
        ob = o[b]
        if prm.new_coords:
            pw = ob[:, 2] * ob[:, 2] * np.float32(4) * aw / np.float32(net_w)
            ph = ob[:, 3] * ob[:, 3] * np.float32(4) * ah / np.float32(net_h)
        else:
            pw = np.exp(ob[:, 2]) * aw / np.float32(net_w)
            ph = np.exp(ob[:, 3]) * ah / np.float32(net_h)
        px = (ii + ob[:, 0]) / np.float32(lw)
        py = (jj + ob[:, 1]) / np.float32(lh)
        obj = ob[:, 4]
        st["avg_anyobj"] += float(obj.astype(np.float64).sum())
        dobj = on * (np.float32(0) - obj)
        if len(tb):
            iou = iou_many(px, py, pw, ph, tb)                    # (T, n, h, w)
            best_iou = np.maximum(iou.max(0), 0)
            best_t = np.argmax(iou, 0)
            match = (ob[:, 5:] > np.float32(0.25)).any(1)
            best_match = np.where(match, best_iou, np.float32(0))
            ign = best_match > prm.ignore_thresh
            if prm.objectness_smooth:
                dobj = np.where(ign, np.maximum(dobj, on * (best_match - obj)), dobj)
            else:
                dobj = np.where(ign, np.float32(0), dobj)
        d[b, :, 4] = dobj
        if len(tb):
            for mn, j, i in zip(*np.nonzero(best_iou > prm.truth_thresh)):
                bi = float(best_iou[mn, j, i])
                t = tb[best_t[mn, j, i]]
                class_id = int(t[4])
                o_obj = o[b, mn, 4, j, i]
                d[b, mn, 4, j, i] = on * (np.float32(bi * bi if prm.objectness_smooth else 1) - o_obj)
                delta_class(b, mn, i, j, class_id, False)
                mult = cm[class_id] if cm else 1.0
                if prm.objectness_smooth:
                    d[b, mn, 5 + class_id, j, i] = np.float32(mult * (bi * bi - o[b, mn, 5 + class_id, j, i]))
                tbox = tuple(float(v) for v in t[:4])
                delta_box(b, mn, prm.mask[mn], i, j, tbox, 2 - tbox[2] * tbox[3],
                          float(np.float32(prm.iou_normalizer * mult)))
        # -- positives: per truth, in order ---------------------------------------------------------------
        for t in tb:
            tbox = tuple(float(v) for v in t[:4])
            class_id = int(t[4])
            i = _float_to_int(np.float32(t[0]) * np.float32(lw))
            j = _float_to_int(np.float32(t[1]) * np.float32(lh))
            i, j = min(i, lw - 1), min(j, lh - 1)
            for mn, a in trained_anchors(prm, biases, net_w, net_h, tbox):
                positive(b, mn, a, i, j, tbox, class_id)
        if prm.iou_thresh < 1.0:          # averages_yolo_deltas
            db = d[b]
            k = (db[:, 5:] > 0).sum(1)                            # (n, h, w) classes trained in the slot
            sel = (db[:, 4] != 0) & (k > 0)
            db[:, :4] = np.where(sel[:, None], db[:, :4] / np.maximum(k, 1)[:, None].astype(np.float32), db[:, :4])
    return d.reshape(out.shape), _finish_stats(prm, d, st, B, lw * lh * n)


def _finish_stats(prm, d, st, B, cells):
    """Darknet's cost and printed line (``show_details=1``)."""
    d64 = d.astype(np.float64)
    loss = float((d64 ** 2).sum())
    classification_loss = float(prm.obj_normalizer * (d64[:, :, 4:] ** 2).sum())
    iou_loss = loss - classification_loss
    count = st["count"] or 1
    class_count = st["class_count"] or 1
    if prm.iou_loss == "mse":
        cost = loss
    else:
        tot = st["tot_giou_loss"] if prm.iou_loss == "giou" else st["tot_iou_loss"]
        cost = prm.iou_normalizer * (tot / count) + classification_loss
    kind = prm.iou_loss if prm.iou_loss in ("mse", "giou") else "iou"
    # printed after Darknet's `if (count == 0) count = 1`; stats["count"] is the real count
    line = (f"v3 ({kind} loss, Normalizer: (iou: {prm.iou_normalizer:.2f}, obj: {prm.obj_normalizer:.2f}, "
            f"cls: {prm.cls_normalizer:.2f}) Region {prm.index} Avg (IOU: {st['tot_iou'] / count:f}), count: "
            f"{count}, class_loss = {classification_loss / B:f}, iou_loss = {iou_loss / B:f}, "
            f"total_loss = {loss / B:f} ")
    return dict(layer=prm.index, type="yolo", cost=cost, loss=loss, classification_loss=classification_loss,
                iou_loss=iou_loss, avg_iou=st["tot_iou"] / count, avg_giou=st["tot_giou"] / count,
                count=st["count"], class_avg=st["avg_cat"] / class_count, obj_avg=st["avg_obj"] / count,
                no_obj_avg=st["avg_anyobj"] / (cells * B), recall50=st["recall"] / count,
                recall75=st["recall75"] / count, total_bbox=st["total_bbox"], rewritten_bbox=st["rewritten_bbox"],
                line=line)
