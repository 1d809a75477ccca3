"""Darknet's ``detector map`` arithmetic (``detector.c`` ``validate_detector_map``), torch-free.

Per image (detections in the order NMS leaves them, then classes ascending; every class with prob > 0 is its
own detection): the detection's truth is the same-class label with the highest IoU above ``iou_thresh``
(strict ``>``; the first of equal IoUs). At ``thresh`` (the ``-thresh`` option) a detection counts as a TP when
it has a truth that no earlier detection *of the same image* (any confidence) took, else FP; the average IoU
is the TPs' IoU summed over TP + FP. For AP, all detections of the set are sorted by confidence (stable, as
glibc's merge sort), and a detection with a truth not taken by a higher-ranked one is a TP. AP per class:
``points=0`` area under the precision envelope at every recall step, ``points=N`` the mean over N recall
points ``k/(N-1)`` of the best precision at recall ``>=`` that point. mAP is the mean over **all** classes,
those without labels included. Float types are Darknet's: float32 for IoU, probabilities and the
``-thresh`` statistics, float64 for precision/recall/AP.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .postprocess import box_iou

F32 = np.float32


@dataclass
class ClassResult:
    class_id: int
    name: str
    ap: float                 # 0..1
    tp: int                   # at thresh
    fp: int                   # at thresh
    truths: int
    detections: int
    precision: np.ndarray = field(repr=False, default=None)   # PR curve over the class's ranked detections
    recall: np.ndarray = field(repr=False, default=None)
    scores: np.ndarray = field(repr=False, default=None)


@dataclass
class MapResult:
    """Everything ``detector map`` prints, plus the PR curves."""
    classes: list
    points: int
    iou_thresh: float
    thresh: float
    detections_count: int
    unique_truth_count: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    avg_iou: float            # 0..1, over TP + FP at thresh
    map: float                # 0..1
    images: int = 0

    def report_lines(self) -> list:
        """Darknet's report, line for line (its ``printf`` formats)."""
        out = [f" detections_count = {self.detections_count}, unique_truth_count = {self.unique_truth_count}  "]
        for c in self.classes:
            out.append(f"class_id = {c.class_id}, name = {c.name}, ap = {_f(c.ap * 100, 2)}%   \t "
                       f"(TP = {c.tp}, FP = {c.fp}) ")
        t = self.thresh
        out += ["",
                f" for conf_thresh = {_f(t, 2)}, precision = {_f(self.precision, 2)}, recall = {_f(self.recall, 2)}, "
                f"F1-score = {_f(self.f1, 2)} ",
                f" for conf_thresh = {_f(t, 2)}, TP = {self.tp}, FP = {self.fp}, FN = {self.fn}, "
                f"average IoU = {_f(float(F32(self.avg_iou) * F32(100)), 2)} % ",
                "",
                f" IoU threshold = {_f(float(F32(self.iou_thresh) * F32(100)), 0)} %, "
                + (f"used {self.points} Recall-points " if self.points else
                   "used Area-Under-Curve for each unique Recall "),
                f" mean average precision (mAP@{_f(self.iou_thresh, 2)}) = {_f(self.map, 6)}, or "
                f"{_f(self.map * 100, 2)} % "]
        return out

    def to_json(self) -> dict:
        return {"map": self.map, "points": self.points, "iou_thresh": self.iou_thresh, "thresh": self.thresh,
                "images": self.images, "detections_count": self.detections_count,
                "unique_truth_count": self.unique_truth_count, "precision": _j(self.precision),
                "recall": _j(self.recall), "f1": _j(self.f1), "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "average_iou": _j(self.avg_iou),
                "classes": [{"class_id": c.class_id, "name": c.name, "ap": c.ap, "tp": c.tp, "fp": c.fp,
                             "truths": c.truths, "detections": c.detections} for c in self.classes]}


def _j(v: float):
    return None if not math.isfinite(v) else float(v)


def _f(v: float, digits: int) -> str:
    """C's ``%.Nf`` (glibc prints NaN from 0/0 as ``-nan``)."""
    v = float(v)
    if math.isnan(v):
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def _div32(a, b) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(F32(a), F32(b), dtype=F32))


class MapAccumulator:
    """Feeds images one by one (``add``), then ``result(points)``; one instance per (iou_thresh, thresh)."""

    def __init__(self, classes: int, iou_thresh: float = 0.5, thresh: float = 0.25):
        self.classes = int(classes)
        self.iou_thresh = F32(iou_thresh)
        self.thresh = F32(thresh)
        self.truth_count = np.zeros(self.classes, np.int64)
        self.unique_truth_count = 0
        self.tp_t = np.zeros(self.classes, np.int64)
        self.fp_t = np.zeros(self.classes, np.int64)
        self.avg_iou = F32(0)
        self.tp_thresh = 0
        self.fp_thresh = 0
        self._p, self._cls, self._truth = [], [], []    # per detection, in Darknet's insertion order
        self.images = 0

    def add(self, boxes: np.ndarray, probs: np.ndarray, truths: np.ndarray, difficult: np.ndarray | None = None):
        """One image: ``boxes`` (n, 4) float32 relative ``x, y, w, h`` and ``probs`` (n, classes) as NMS leaves
        them; ``truths`` (m, 5) ``class, x, y, w, h`` (see :func:`darknet_prn.dataset.read_labels`);
        ``difficult``: the ``difficult=`` list's labels of the image (detections matching one are dropped)."""
        self.images += 1
        truths = np.asarray(truths, F32).reshape(-1, 5)
        t_cls = truths[:, 0].astype(np.int64)
        if len(t_cls) and (t_cls.min() < 0 or t_cls.max() >= self.classes):
            raise ValueError("label class id out of range")   # read_labels checks this with file:line
        np.add.at(self.truth_count, t_cls, 1)
        dif = None if difficult is None else np.asarray(difficult, F32).reshape(-1, 5)
        boxes = np.asarray(boxes, F32).reshape(-1, 4)
        probs = np.asarray(probs, F32)
        ncls = min(self.classes, probs.shape[1]) if probs.ndim == 2 else 0
        taken_here = []                                   # unique_truth_index of this image's detections
        for i in range(len(boxes)):
            row = probs[i, :ncls]
            nz = np.flatnonzero(row > 0)
            if not len(nz):
                continue
            ious = box_iou(boxes[i], truths[:, 1:5]) if len(truths) else np.zeros(0, F32)
            dious = box_iou(boxes[i], dif[:, 1:5]) if dif is not None and len(dif) else None
            for c in nz:
                prob = row[c]
                truth_index, max_iou = -1, F32(0)
                ok = (ious > self.iou_thresh) & (t_cls == c)
                if ok.any():
                    j = int(np.argmax(np.where(ok, ious, F32(-1))))     # the first of equal IoUs
                    max_iou = ious[j]
                    truth_index = self.unique_truth_count + j
                keep = True
                if truth_index < 0 and dious is not None:
                    keep = not bool(np.any((dious > self.iou_thresh) & (dif[:, 0].astype(np.int64) == c)))
                if prob > self.thresh:
                    # Darknet scans this image's earlier detections; after dropping a difficult match its
                    # count is one lower, so the scan also misses the last kept one
                    earlier = taken_here if keep else taken_here[:-1]
                    if truth_index > -1 and truth_index not in earlier:
                        self.avg_iou = F32(self.avg_iou + max_iou)
                        self.tp_thresh += 1
                        self.tp_t[c] += 1
                    else:
                        self.fp_thresh += 1
                        self.fp_t[c] += 1
                if keep:
                    self._p.append(prob)
                    self._cls.append(c)
                    self._truth.append(truth_index)
                    taken_here.append(truth_index)
        self.unique_truth_count += len(truths)

    def result(self, points: int = 0, names=None) -> MapResult:
        names = list(names) if names is not None else [str(i) for i in range(self.classes)]
        n_det = len(self._p)
        p = np.asarray(self._p, F32)
        cls = np.asarray(self._cls, np.int64)
        truth = np.asarray(self._truth, np.int64)
        order = np.argsort(-p, kind="stable")          # qsort with detections_comparator (merge sort: stable)
        p, cls, truth = p[order], cls[order], truth[order]
        taken = np.zeros(self.unique_truth_count, bool)
        is_tp = np.zeros(n_det, bool)
        for r in range(n_det):
            t = truth[r]
            if t >= 0 and not taken[t]:
                taken[t] = True
                is_tp[r] = True
        results = []
        total_ap = 0.0
        for c in range(self.classes):
            sel = np.flatnonzero(cls == c)
            tp = np.cumsum(is_tp[sel]).astype(np.float64)
            fp = np.cumsum(~is_tp[sel]).astype(np.float64)
            n_truth = int(self.truth_count[c])
            with np.errstate(divide="ignore", invalid="ignore"):
                prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            rec = tp / n_truth if n_truth > 0 else np.zeros_like(tp)
            ap = _average_precision(prec, rec, points)
            total_ap += ap
            results.append(ClassResult(c, names[c] if c < len(names) else str(c), ap, int(self.tp_t[c]),
                                       int(self.fp_t[c]), n_truth, len(sel), prec, rec, p[sel]))
        avg_iou = self.avg_iou
        if self.tp_thresh + self.fp_thresh > 0:
            avg_iou = F32(avg_iou / F32(self.tp_thresh + self.fp_thresh))
        tp, fp, fn = self.tp_thresh, self.fp_thresh, self.unique_truth_count - self.tp_thresh
        precision = _div32(tp, F32(tp) + F32(fp))
        recall = _div32(tp, F32(tp) + F32(fn))
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = float(F32(2) * F32(precision) * F32(recall) / (F32(precision) + F32(recall)))
        return MapResult(results, int(points), float(self.iou_thresh), float(self.thresh), n_det,
                         self.unique_truth_count, tp, fp, fn, precision, recall, f1, float(avg_iou),
                         total_ap / self.classes if self.classes else 0.0, self.images)


def _average_precision(prec: np.ndarray, rec: np.ndarray, points: int) -> float:
    """AP of one class from its PR values at its own ranks (Darknet's per-rank values repeat them between the
    class's detections and are 0 before its first one, which changes no sum: the result is bit-identical)."""
    if points == 0:
        if not len(prec):
            return 0.0
        avg = 0.0
        last_r, last_p = float(rec[-1]), float(prec[-1])
        for k in range(len(prec) - 2, -1, -1):
            last_p = max(last_p, float(prec[k]))
            avg += (last_r - float(rec[k])) * last_p
            last_r = float(rec[k])
        return avg + (last_r - 0.0) * last_p
    avg = 0.0
    for point in range(points):
        cur_recall = point * 1.0 / (points - 1)
        ok = rec >= cur_recall
        best = float(prec[ok].max()) if ok.any() else 0.0
        avg += max(best, 0.0)
    return avg / points


def confusion_matrix(images, classes: int, thresh: float = 0.25, iou_thresh: float = 0.5) -> np.ndarray:
    """``(classes + 1, classes + 1)`` counts, rows = true class, columns = predicted class, index ``classes`` =
    background. Per image the detections above ``thresh`` (every class above it its own) take, by confidence,
    the unmatched label of any class with the highest IoU above ``iou_thresh``; the rest are background
    predictions, unmatched labels background misses. ``images``: ``(boxes, probs, truths)`` per image."""
    m = np.zeros((classes + 1, classes + 1), np.int64)
    thr, iou_t = F32(thresh), F32(iou_thresh)
    for boxes, probs, truths in images:
        truths = np.asarray(truths, F32).reshape(-1, 5)
        rows, cls = np.nonzero(np.asarray(probs)[:, :classes] > thr)
        order = np.argsort(-np.asarray(probs)[rows, cls], kind="stable")
        used = np.zeros(len(truths), bool)
        for r, c in zip(rows[order], cls[order]):
            j = -1
            if len(truths):
                ious = np.where(used, F32(-1), box_iou(boxes[r], truths[:, 1:5]))
                j = int(np.argmax(ious))
                if not ious[j] > iou_t:
                    j = -1
            if j >= 0:
                used[j] = True
                m[int(truths[j, 0]), c] += 1
            else:
                m[classes, c] += 1
        for t in truths[~used]:
            m[int(t[0]), classes] += 1
    return m
