"""Truth layouts of Darknet's training step (``net.truth``).

Detectors: per image ``max_boxes`` slots of ``truth_size`` floats ``x, y, w, h, class[, track id]`` (relative
centre coordinates), unused slots 0; Darknet's heads stop reading at the first slot whose x is 0.
Classifiers: one float per class (one-hot), as ``net.truth`` holds the label.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DarknetError

TRUTH_SIZE = 6           # this Darknet's l.truth_size = 4 + 2 (x, y, w, h, class, track id)
MAX_BOXES = 200          # [yolo]/[region] max= default


def _numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def detection_truth(truth, batch: int, max_boxes: int = MAX_BOXES) -> np.ndarray:
    """(B, max_boxes * 6) float32 from Darknet's layout (B, T) with T a multiple of 6, or from a list of B
    arrays (n, 5) ``x, y, w, h, class`` (relative centre coordinates; boxes after the first ``max_boxes`` of an
    image are dropped, as Darknet's data loader keeps at most ``max`` boxes)."""
    if isinstance(truth, (list, tuple)):
        if len(truth) != batch:
            raise DarknetError(f"truth: a list of {len(truth)} images for a batch of {batch}")
        out = np.zeros((batch, max_boxes * TRUTH_SIZE), np.float32)
        for b, boxes in enumerate(truth):
            a = _numpy(boxes)
            if a.size == 0:
                continue
            if a.ndim != 2 or a.shape[1] not in (5, 6):
                raise DarknetError(f"truth: image {b} boxes must be (n, 5) [x, y, w, h, class], got shape {a.shape}")
            a = a[:max_boxes]
            bad = ~np.isfinite(a).all(1) | (a[:, 2] < 0) | (a[:, 3] < 0)
            if bad.any():
                raise DarknetError(f"truth: image {b} box {int(np.argmax(bad))} is not finite or has w/h < 0: "
                                   f"{a[int(np.argmax(bad))].tolist()}")
            rows = out[b].reshape(max_boxes, TRUTH_SIZE)
            rows[:len(a), :a.shape[1]] = a
        return out
    a = _numpy(truth)
    if a.ndim != 2 or a.shape[0] != batch or a.shape[1] % TRUTH_SIZE:
        raise DarknetError(f"truth must be (B={batch}, max_boxes*{TRUTH_SIZE}) in Darknet's net.truth layout or a "
                           f"list of (n, 5) boxes per image, got shape {tuple(a.shape)}")
    return np.ascontiguousarray(a)


def image_boxes(truth_row: np.ndarray, max_boxes: int) -> np.ndarray:
    """The boxes Darknet reads from one image's truth row: slots up to the first x == 0, as (n, 5)."""
    rows = truth_row.reshape(-1, TRUTH_SIZE)[:max_boxes, :5]
    zero = np.nonzero(rows[:, 0] == 0)[0]
    return rows[:zero[0]] if len(zero) else rows


def classifier_truth(truth, batch: int, classes: int) -> np.ndarray:
    """(B, classes) float32: one-hot rows as given, or class ids (B,) turned into one-hot."""
    a = _numpy(truth)
    if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1 and classes != 1):
        ids = a.reshape(-1)
        if ids.shape[0] != batch:
            raise DarknetError(f"truth: {ids.shape[0]} class ids for a batch of {batch}")
        if not np.all((ids >= 0) & (ids < classes) & (ids == np.floor(ids))):
            raise DarknetError(f"truth: class ids must be integers in [0, {classes}), got {ids.tolist()[:8]}")
        out = np.zeros((batch, classes), np.float32)
        out[np.arange(batch), ids.astype(np.int64)] = 1.0
        return out
    if a.ndim != 2 or a.shape != (batch, classes):
        raise DarknetError(f"truth must be (B={batch}, classes={classes}) one-hot or (B,) class ids, "
                           f"got shape {tuple(a.shape)}")
    return np.ascontiguousarray(a)
