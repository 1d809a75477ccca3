"""Head decoding, box correction, NMS and Darknet's print ordering (spec §3.5, §3.10). numpy only, no torch.

Everything reproduces the arithmetic of AlexeyAB Darknet's CPU code (float32 where it uses float, float64 where
the C code promotes to double) and its *order* of detections, which decides the order of the printed lines:

* :func:`get_network_boxes` -- ``get_network_boxes(net, im_w, im_h, thresh, hier, 0, relative=1, letter)``:
  heads in layer order; ``[yolo]``/``[Gaussian_yolo]`` keep a cell x anchor when ``objectness > thresh``
  (cells row-major, then anchors), ``[region]``/``[detection]`` keep every cell x anchor.
* :func:`nms` -- ``do_nms_sort`` (``nms_kind=default``) or ``diounms_sort`` (greedynms / diounms / cornersnms),
  including the permutation Darknet's per-class sorts leave behind (glibc's ``qsort`` is a stable merge sort).
* :func:`darknet_order` -- ``draw_detections_v3``: one record per (detection, class) above the threshold, detections
  sorted by their left edge, best class first then the other classes in ascending order.

Boxes are ``(x, y, w, h)``: centre and size relative to the image (``relative=1``), after
``correct_yolo_boxes``. The one deliberate difference: Darknet's YOLOv1 ``[detection]`` boxes are printed
multiplied by the image size twice (a printing bug, spec §3.5); we return them relative like every other head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import letterbox_size
from .heads import layout_of

F32 = np.float32


@dataclass
class Detections:
    """Darknet's ``detection`` array for one image: ``boxes`` (n, 4) float32 ``x, y, w, h`` relative to the
    image, ``objectness`` (n,) float32, ``probs`` (n, classes) float32 (0 where not above the threshold)."""
    boxes: np.ndarray
    objectness: np.ndarray
    probs: np.ndarray

    @classmethod
    def empty(cls, classes: int) -> "Detections":
        return cls(np.zeros((0, 4), F32), np.zeros((0,), F32), np.zeros((0, classes), F32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def classes(self) -> int:
        return int(self.probs.shape[1])

    def take(self, idx) -> "Detections":
        idx = np.asarray(idx, dtype=np.int64)
        return Detections(self.boxes[idx], self.objectness[idx], self.probs[idx])

    @staticmethod
    def concat(parts, classes: int) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty(classes)
        width = max(p.classes for p in parts)
        probs = [p.probs if p.classes == width else
                 np.pad(p.probs, ((0, 0), (0, width - p.classes))) for p in parts]
        return Detections(np.concatenate([p.boxes for p in parts]),
                          np.concatenate([p.objectness for p in parts]), np.concatenate(probs))


def _np(t) -> np.ndarray:
    """A head tensor (torch or numpy) of one image as a float32 numpy array."""
    if hasattr(t, "detach"):
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.float().numpy()
    return np.asarray(t, dtype=F32)


def _thresholded(prob: np.ndarray, thresh: float) -> np.ndarray:
    return np.where(prob > F32(thresh), prob, F32(0)).astype(F32, copy=False)


def _logistic(x: np.ndarray) -> np.ndarray:
    """``logistic_activate``: ``1.f / (1.f + expf(-x))`` in float32."""
    with np.errstate(over="ignore"):
        return (F32(1) / (F32(1) + np.exp(-x.astype(F32)))).astype(F32)


# ---------------------------------------------------------------------------------------------------------------
# heads


def _decode_yolo_family(out, kind: str, p: dict, net_w: int, net_h: int, thresh: float) -> Detections:
    out = _np(out)
    lay = layout_of(kind, p)
    n, o = lay.anchors, lay.offsets
    _, h, w = out.shape
    a = out.reshape(n, lay.per, h, w).transpose(2, 3, 0, 1).reshape(h * w * n, lay.per)
    keep = np.nonzero(a[:, o["obj"]] > F32(thresh))[0]          # strict: NaN and <= thresh dropped
    if keep.size == 0:
        return Detections.empty(lay.classes)
    a = a[keep]
    cell, anchor = keep // n, keep % n
    col, row = (cell % w).astype(F32), (cell // w).astype(F32)
    awh = np.asarray(lay.anchor_wh, dtype=F32).reshape(-1, 2)[anchor]
    aw, ah = awh[:, 0], awh[:, 1]
    tx, ty, tw, th, obj = (a[:, o[f]] for f in ("x", "y", "w", "h", "obj"))
    bx = (col + tx) / F32(w)
    by = (row + ty) / F32(h)
    if kind == "yolo" and int(p.get("new_coords", 0)):
        bw = tw * tw * F32(4) * aw / F32(net_w)
        bh = th * th * F32(4) * ah / F32(net_h)
    else:
        with np.errstate(over="ignore"):
            bw = (np.exp(tw.astype(np.float64)) * aw.astype(np.float64) / net_w).astype(F32)
            bh = (np.exp(th.astype(np.float64)) * ah.astype(np.float64) / net_h).astype(F32)
    prob = obj[:, None] * a[:, o["cls"]:]
    if kind == "gaussian_yolo":
        point = str(p.get("yolo_point", "center")).lower()
        if point == "left_top":
            bx, by = bx + bw / F32(2), by + bh / F32(2)
        elif point == "right_bottom":
            bx, by = bx - bw / F32(2), by - bh / F32(2)
        uc = (a[:, o["sx"]].astype(np.float64) + a[:, o["sy"]] + a[:, o["sw"]] + a[:, o["sh"]]) / 4.0
        prob = (prob.astype(np.float64) * (1.0 - uc)[:, None]).astype(F32)
    return Detections(np.stack([bx, by, bw, bh], 1).astype(F32), obj.astype(F32), _thresholded(prob, thresh))


def decode_yolo(out, p: dict, net_w: int, net_h: int, thresh: float) -> Detections:
    """``get_yolo_detections`` (before ``correct_yolo_boxes``) for one image: cells row-major, then anchors,
    those with objectness ``> thresh``.

    ``out``: the layer output ``(n_mask*(5+C), H, W)`` with logistic (unless ``new_coords``) and ``scale_x_y``
    already applied, as Darknet's ``l.output``.
    """
    return _decode_yolo_family(out, "yolo", p, net_w, net_h, thresh)


def decode_gaussian_yolo(out, p: dict, net_w: int, net_h: int, thresh: float) -> Detections:
    """``get_gaussian_yolo_detections`` (before box correction): ``(n*(9+C), H, W)`` with channels
    ``[x, σx, y, σy, w, σw, h, σh, obj, cls...]``; ``prob = obj·cls·(1 − mean σ)``; ``yolo_point`` offsets."""
    return _decode_yolo_family(out, "gaussian_yolo", p, net_w, net_h, thresh)


def decode_region(out, p: dict, thresh: float, hier: float = 0.5) -> Detections:
    """``custom_get_region_detections`` / ``get_region_boxes`` (YOLOv2): every cell x anchor is a detection with
    objectness 1. ``out``: ``(H*W, num, coords+1+C)`` (any shape with that many elements; the layer's out_shape
    ``(c, h, w)`` must be passed as ``p['out_shape']`` or ``p['h']``/``p['w']`` when it is flat)."""
    out = _np(out)
    classes, num, coords = int(p["classes"]), int(p["num"]), int(p.get("coords", 4))
    h, w = _region_hw(out, p)
    a = out.reshape(h * w * num, coords + 1 + classes).astype(F32)
    idx = np.arange(h * w * num)
    cell, anchor = idx // num, idx % num
    col, row = (cell % w).astype(F32), (cell // w).astype(F32)
    anchors = np.asarray(p["anchors"], dtype=F32).reshape(-1, 2)
    bx = (col + _logistic(a[:, 0])) / F32(w)
    by = (row + _logistic(a[:, 1])) / F32(h)
    with np.errstate(over="ignore"):
        bw = (np.exp(a[:, 2].astype(np.float64)) * anchors[anchor, 0].astype(np.float64) / w).astype(F32)
        bh = (np.exp(a[:, 3].astype(np.float64)) * anchors[anchor, 1].astype(np.float64) / h).astype(F32)
    scale = a[:, coords]
    cls = a[:, coords + 1:]
    tree = p.get("tree")
    if tree and "parent" in tree:
        pred = cls.copy()
        parents = tree["parent"]
        for j in range(classes):                      # hierarchy_predictions: cumulative, in index order
            par = parents[j]
            if par >= 0:
                pred[:, j] = pred[:, j] * pred[:, par]
        above = pred > F32(hier)                      # keep only the deepest (highest index) class above hier
        rev_first = np.argmax(above[:, ::-1], axis=1)
        best = classes - 1 - rev_first
        has = above.any(axis=1)
        keep = np.zeros_like(pred, dtype=bool)
        keep[np.nonzero(has)[0], best[has]] = True
        pred = np.where(keep, pred, F32(0))
        probs = np.where((scale > F32(thresh))[:, None], pred, F32(0)).astype(F32)
    else:
        probs = _thresholded(scale[:, None] * cls, thresh)
    return Detections(np.stack([bx, by, bw, bh], 1).astype(F32), np.ones(h * w * num, F32), probs)


def _region_hw(out, p):
    if "h" in p and "w" in p:
        return int(p["h"]), int(p["w"])
    shape = p.get("out_shape")
    if shape is not None and len(shape) == 3 and shape[1] * shape[2] > 0:
        return int(shape[1]), int(shape[2])
    if out.ndim == 3:     # (H*W, num, entries): assume square
        s = int(round(np.sqrt(out.shape[0])))
        return s, s
    raise ValueError("region head: spatial size unknown")


def decode_detection(out, p: dict, thresh: float) -> Detections:
    """``get_detection_detections`` (YOLOv1): flat ``side²·((1+coords)·num + classes)`` output laid out as
    classes ``[side²][C]``, confidences ``[side²][num]``, boxes ``[side²][num][4]``. Boxes are returned relative
    to the image (Darknet multiplies by the image size here and again when printing; see the module doc)."""
    out = _np(out).reshape(-1)
    classes, num, side = int(p["classes"]), int(p["num"]), int(p["side"])
    sq = bool(int(p.get("sqrt", 0)))
    cells = side * side
    cls = out[:cells * classes].reshape(cells, classes)
    scale = out[cells * classes: cells * (classes + num)].reshape(cells * num)
    box = out[cells * (classes + num): cells * (classes + num) + cells * num * 4].reshape(cells * num, 4)
    idx = np.arange(cells * num)
    cell = idx // num
    col, row = (cell % side).astype(F32), (cell // side).astype(F32)
    bx = (box[:, 0] + col) / F32(side)
    by = (box[:, 1] + row) / F32(side)
    bw = box[:, 2] * box[:, 2] if sq else box[:, 2].copy()
    bh = box[:, 3] * box[:, 3] if sq else box[:, 3].copy()
    probs = _thresholded(scale[:, None] * cls[cell], thresh)
    return Detections(np.stack([bx, by, bw, bh], 1).astype(F32), scale.astype(F32), probs)


def correct_yolo_boxes(boxes: np.ndarray, im_w: int, im_h: int, net_w: int, net_h: int, letter: bool) -> np.ndarray:
    """``correct_yolo_boxes`` with ``relative=1``: undo the letterbox (identity without it)."""
    boxes = np.asarray(boxes, dtype=F32)
    if not letter or len(boxes) == 0:
        return boxes.copy()
    new_w, new_h = letterbox_size(im_w, im_h, net_w, net_h)
    b = boxes.astype(np.float64)
    sx = float(F32(new_w) / F32(net_w))
    sy = float(F32(new_h) / F32(net_h))
    x = (b[:, 0] - (net_w - new_w) / 2.0 / net_w) / sx
    y = (b[:, 1] - (net_h - new_h) / 2.0 / net_h) / sy
    bw = boxes[:, 2] * (F32(net_w) / F32(new_w))
    bh = boxes[:, 3] * (F32(net_h) / F32(new_h))
    return np.stack([x.astype(F32), y.astype(F32), bw.astype(F32), bh.astype(F32)], 1)


def get_network_boxes(heads, layers, im_w: int, im_h: int, net_w: int, net_h: int, thresh: float = 0.25,
                      hier: float = 0.5, letter: bool = False) -> Detections:
    """All heads of one image -> :class:`Detections` in Darknet's order. ``heads``: one array per head layer
    (batch dimension removed); ``layers``: the matching graph layers (``.type``, ``.p``, ``.out_shape``)."""
    parts = []
    classes = 0
    for out, layer in zip(heads, layers):
        p = layer.p
        classes = max(classes, int(p.get("classes", 0)))
        t = layer.type
        if t == "yolo":
            d = decode_yolo(out, p, net_w, net_h, thresh)
        elif t == "gaussian_yolo":
            d = decode_gaussian_yolo(out, p, net_w, net_h, thresh)
        elif t == "region":
            q = dict(p)
            q.setdefault("out_shape", getattr(layer, "out_shape", None))
            d = decode_region(out, q, thresh, hier)
        elif t == "detection":
            parts.append(decode_detection(out, p, thresh))
            continue
        else:
            continue
        d.boxes = correct_yolo_boxes(d.boxes, im_w, im_h, net_w, net_h, letter)
        parts.append(d)
    return Detections.concat(parts, classes)


# ---------------------------------------------------------------------------------------------------------------
# NMS


def _pair_span(a: np.ndarray, b: np.ndarray, inner: bool):
    """Width and height of the intersection (``inner``) or of the smallest enclosing box of every pair of the
    centre-format boxes ``a`` (as a column) and ``b`` (as a row), in float32 as Darknet's ``overlap``."""
    two = F32(2)
    ax, ay, aw, ah = (a[:, i:i + 1] for i in range(4))
    bx, by, bw, bh = (b[None, :, i] for i in range(4))
    lo, hi = (np.maximum, np.minimum) if inner else (np.minimum, np.maximum)
    w = hi(ax + aw / two, bx + bw / two) - lo(ax - aw / two, bx - bw / two)
    h = hi(ay + ah / two, by + bh / two) - lo(ay - ah / two, by - bh / two)
    return w, h


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's ``box_iou`` (centre format, float32, 0 when I or U is 0) of every box in ``a`` (m, 4) against
    every box in ``b`` (k, 4) -> (m, k). Symmetric, and element-wise identical to the scalar C function."""
    w, h = _pair_span(a, b, inner=True)
    inter = np.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)
    union = (a[:, 2:3] * a[:, 3:4] + b[None, :, 2] * b[None, :, 3]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((inter == 0) | (union == 0), F32(0), inter / union)
    return iou.astype(F32)


def _pair_diou(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    """Darknet's ``box_diou`` / ``box_diounms``: ``IoU − (d²/c²)^beta`` for every pair -> (m, k)."""
    w, h = _pair_span(a, b, inner=False)
    c = w * w + h * h
    iou = _pair_iou(a, b)
    ax, ay, bx, by = a[:, 0:1], a[:, 1:2], b[None, :, 0], b[None, :, 1]
    d = (ax - bx) * (ax - bx) + (ay - by) * (ay - by)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.power((d / c).astype(np.float64), float(beta)).astype(F32)
    return np.where(c == 0, iou, iou - u).astype(F32)


def _pair_score(a, b, kind: str, beta: float) -> np.ndarray:
    if kind == "greedynms":
        return _pair_diou(a, b, 0.6)
    if kind == "diounms":
        return _pair_diou(a, b, beta)
    return _pair_iou(a, b)           # default, cornersnms


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Darknet's ``box_iou`` of box ``a`` (4,) against boxes ``b`` (m, 4) -> (m,)."""
    return _pair_iou(np.asarray(a, F32).reshape(1, 4), np.asarray(b, F32).reshape(-1, 4))[0]


def box_diou(a: np.ndarray, b: np.ndarray, beta: float = 0.6) -> np.ndarray:
    """Darknet's ``box_diou`` (beta 0.6, greedynms) / ``box_diounms`` (beta_nms) of ``a`` against ``b``."""
    return _pair_diou(np.asarray(a, F32).reshape(1, 4), np.asarray(b, F32).reshape(-1, 4), beta)[0]


def _drop_zero_objectness(obj: np.ndarray) -> np.ndarray:
    """The first loop of ``do_nms_sort``: swap every detection with objectness 0 to the end and drop it."""
    n = len(obj)
    idx = list(range(n))
    if not np.any(obj == 0):
        return np.arange(n)
    k = n - 1
    i = 0
    while i <= k:
        if obj[idx[i]] == 0:
            idx[i], idx[k] = idx[k], idx[i]
            k -= 1
        else:
            i += 1
    return np.asarray(idx[:k + 1], dtype=np.int64)


_FULL_MATRIX_MAX = 3000


def nms(dets: Detections, thresh: float = 0.45, kind: str = "default", beta: float = 0.6,
        classes: int | None = None) -> Detections:
    """Darknet's ``do_nms_sort`` (``kind='default'``) or ``diounms_sort`` (``greedynms``: DIoU with exponent 0.6,
    ``diounms``: exponent ``beta``, ``cornersnms``: IoU). Returns the surviving detections in the order Darknet
    leaves them, with suppressed class probabilities set to 0 (a detection stays even if all its classes are 0).
    """
    if len(dets) == 0:
        return dets
    order = _drop_zero_objectness(dets.objectness)
    boxes = dets.boxes
    probs = dets.probs.copy()
    ncls = probs.shape[1] if classes is None else min(int(classes), probs.shape[1])
    thr = F32(thresh)
    # the suppression test of every pair, computed once (it does not depend on the class)
    full = None
    if len(order) <= _FULL_MATRIX_MAX and np.count_nonzero(probs[order, :ncls].any(axis=1)) > 1:
        full = _pair_score(boxes, boxes, kind, beta) > thr
    for k in range(ncls):
        col = probs[order, k]
        if not col.any():
            continue          # a stable sort on an all-zero key leaves the order unchanged
        order = order[np.argsort(-col, kind="stable")]
        cand = order[probs[order, k] != 0]
        m = len(cand)
        if m < 2:
            continue
        if full is not None:
            sup = full[np.ix_(cand, cand)]
        elif m <= _FULL_MATRIX_MAX:
            sup = _pair_score(boxes[cand], boxes[cand], kind, beta) > thr
        else:
            sup = None
        alive = np.ones(m, dtype=bool)
        for pos in range(m - 1):
            if not alive[pos]:
                continue
            if sup is not None:
                alive[pos + 1:] &= ~sup[pos, pos + 1:]
            else:
                alive[pos + 1:] &= ~(_pair_score(boxes[cand[pos]][None], boxes[cand[pos + 1:]], kind, beta)[0]
                                     > thr)
        probs[cand[~alive], k] = 0
    return Detections(boxes[order], dets.objectness[order], probs[order])


# ---------------------------------------------------------------------------------------------------------------
# output ordering


def _c_round(v: np.ndarray) -> np.ndarray:
    """C ``round``: half away from zero (keeps the sign of zero, so ``-0`` prints as Darknet prints it)."""
    v = np.asarray(v, dtype=np.float64)
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


def darknet_order(dets: Detections, im_w: int, im_h: int, thresh: float = 0.25, names=None) -> list:
    """``draw_detections_v3``'s output order: a list of dicts, one per printed line, with ``det`` (index into
    ``dets``), ``class_id``, ``prob``, ``box`` (x, y, w, h), ``left``/``top``/``width``/``height`` (pixels,
    unrounded) -- Python floats holding the float32 values Darknet computes -- and ``pixels`` (the rounded ints
    Darknet prints, as floats)."""
    n = len(dets)
    if n == 0:
        return []
    thr = F32(thresh)
    probs = dets.probs
    show = np.ones(probs.shape[1], dtype=bool)
    if names is not None:
        for j, nm in enumerate(names[:probs.shape[1]]):
            if str(nm).startswith("dont_show"):
                show[j] = False
    masked = np.where(show[None, :] & (probs > thr), probs, -np.inf)
    best = np.argmax(masked, axis=1)                  # first index of the maximum, as the strict '>' loop
    selected = np.nonzero(np.isfinite(masked[np.arange(n), best]))[0]
    if selected.size == 0:
        return []
    b = dets.boxes
    lefts = b[selected, 0] - b[selected, 2] / F32(2)
    selected = selected[np.argsort(lefts, kind="stable")]
    # float32 arithmetic on whole columns (each element rounds exactly as the scalar C code), then Python floats
    bs = np.asarray(b[selected], dtype=np.float32)
    x, y, w, h = bs.T
    px = np.stack([(x - w / F32(2)) * F32(im_w), (y - h / F32(2)) * F32(im_h), w * F32(im_w), h * F32(im_h)], 1)
    rounded = _c_round(px).tolist()
    above = probs[selected] > thr
    best_sel = best[selected].tolist()
    extra = [[] for _ in range(len(selected))]
    for r, j in zip(*(a.tolist() for a in np.nonzero(above))):
        if j != best_sel[r]:
            extra[r].append(j)
    sel_probs = probs[selected].astype(np.float32)
    records = []
    for r, (i, box, (left, top, width, height), pix) in enumerate(zip(selected.tolist(), bs.tolist(), px.tolist(),
                                                                     rounded)):
        box, pix, row = tuple(box), tuple(pix), sel_probs[r]
        for j in [best_sel[r]] + extra[r]:
            records.append(dict(det=i, class_id=j, prob=float(row[j]), box=box, left=left, top=top, width=width,
                                height=height, pixels=pix))
    return records


def format_line(name: str, prob, pixels) -> str:
    """One line of Darknet's ``-ext_output`` text (without the newline)."""
    l, t, w, h = pixels
    return ("%s: %.0f%%\t(left_x: %4.0f   top_y: %4.0f   width: %4.0f   height: %4.0f)"
            % (name, float(F32(prob) * F32(100)), l, t, w, h))


def nms_settings(layers) -> tuple:
    """``(kind, beta, classes)`` from the last ``[yolo]``/``[Gaussian_yolo]``/``[region]`` head (else the last
    head), as ``test_detector`` picks ``l``."""
    chosen = None
    for layer in layers:
        if layer.type in ("yolo", "gaussian_yolo", "region"):
            chosen = layer
    if chosen is None and layers:
        chosen = layers[-1]
    if chosen is None:
        return "default", 0.6, None
    p = chosen.p
    return str(p.get("nms_kind", "default")), float(p.get("beta_nms", 0.6)), int(p.get("classes", 0)) or None
