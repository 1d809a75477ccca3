"""COCO facts as Darknet uses them (``detector.c``): the 80-class category id table and the image id rule.

Torch-free; used by ``detect --coco`` and ``valid``.
"""
from __future__ import annotations

import os
import re

# detector.c coco_ids: category id of each of the 80 classes of coco.names
COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?\d+)")


def _atoi(s: str):
    m = _ATOI.match(s)
    return int(m.group(1)) if m else None


def basecfg(path) -> str:
    """utils.c ``basecfg``: the file name after the last ``/`` (else the last ``\\``), cut at its first ``.``."""
    s = os.fspath(path)
    s = s.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
    return s.split(".", 1)[0]


def coco_image_id(path):
    """The COCO image id of an image file, as Darknet derives it.

    ``print_cocos`` (``detector valid``) writes ``atoi(basecfg(path))``: ``000000000042.jpg`` -> 42 (COCO 2017
    names). For COCO 2014 names that gives 0 for every image; Darknet's own ``get_coco_image_id`` (the number
    after the last ``_``) is the rule meant for them: ``COCO_val2014_000000000042.jpg`` -> 42, used here when
    the name does not start with a number. Names with no number in either place give ``None`` (the caller keeps
    the name)."""
    stem = basecfg(path)
    n = _atoi(stem)
    if n is None and "_" in stem:
        n = _atoi(stem.rsplit("_", 1)[1])
    return n


def category_id(class_id: int, classes: int) -> int:
    """COCO's category id for ``class_id`` when the head has the 80 COCO classes (``coco_ids``), else the class
    id itself."""
    return COCO_IDS[class_id] if classes == 80 and 0 <= class_id < 80 else class_id


def result_row(image_id, class_id: int, classes: int, bbox, score: float) -> dict:
    """One COCO results row; ``bbox`` = ``[x, y, w, h]`` in pixels (already clipped, as ``print_cocos`` does)."""
    return {"image_id": image_id, "category_id": category_id(class_id, classes),
            "bbox": [float(v) for v in bbox], "score": float(score)}


def clip_box(left: float, top: float, width: float, height: float, im_w: int, im_h: int) -> list:
    """``print_cocos``'s clipping: corners clipped to ``[0, im_w] x [0, im_h]`` -> ``[x, y, w, h]``."""
    x0, y0 = max(left, 0.0), max(top, 0.0)
    x1, y1 = min(left + width, float(im_w)), min(top + height, float(im_h))
    return [x0, y0, x1 - x0, y1 - y0]
