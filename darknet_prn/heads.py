"""Where a detection head keeps what in its output (Darknet's ``l.output`` layout), once. No torch here.

``graph.py`` stores ``layout(type, p)`` as ``Layer.p["layout"]``; the reference modules, the fast plan, the ONNX
``Decode`` and ``postprocess``'s decoders read it (``layout_of`` also serves a bare parameter dict, as tests and
callers of the decoders pass).

* ``[yolo]`` / ``[Gaussian_yolo]``: the input ``(anchors * per, H, W)``, box ``a`` of a cell at channels
  ``a*per .. a*per + per - 1``; inside a box the fields of ``FIELDS[type]`` then the classes.
* ``[region]``: Darknet's transposed ``(H*W, num, per)`` with ``per = coords + 1 + classes``: ``x y w h``
  (the first 4 coords), objectness at ``coords``, classes after it.
* ``[detection]``: flat ``[cells][classes]`` class probabilities, ``[cells][num]`` confidences,
  ``[cells][num][4]`` boxes (``cells = side*side``).
"""
from __future__ import annotations

from dataclasses import dataclass

FIELDS = {
    "yolo": ("x", "y", "w", "h", "obj"),
    "gaussian_yolo": ("x", "sx", "y", "sy", "w", "sw", "h", "sh", "obj"),
}


@dataclass(frozen=True)
class Layout:
    kind: str
    classes: int
    anchors: int          # boxes per cell
    per: int              # values per box (yolo/region; detection: 4)
    offsets: dict         # field -> offset inside a box's values ("cls": where the classes start);
                          # detection: "cls", "obj", "box" -> offset of that block in the flat output
    anchor_wh: tuple      # ((w, h), ...) the anchors of the boxes of a cell, in box order


def per_box(kind: str, classes: int) -> int:
    """Values per box of a ``[yolo]``/``[Gaussian_yolo]`` head (the channels its input needs per anchor)."""
    return len(FIELDS[kind]) + classes


def layout(kind: str, p: dict) -> Layout:
    classes = int(p["classes"])
    if kind in FIELDS:
        names = FIELDS[kind]
        mask = list(p["mask"])
        a = p["anchors"]
        offsets = {f: i for i, f in enumerate(names)}
        offsets["cls"] = len(names)
        return Layout(kind, classes, len(mask), per_box(kind, classes), offsets,
                      tuple((float(a[2 * m]), float(a[2 * m + 1])) for m in mask))
    num = int(p["num"])
    if kind == "region":
        coords = int(p.get("coords", 4))
        a = p["anchors"]
        return Layout(kind, classes, num, coords + 1 + classes,
                      dict(x=0, y=1, w=2, h=3, obj=coords, cls=coords + 1),
                      tuple((float(a[2 * k]), float(a[2 * k + 1])) for k in range(num)))
    if kind == "detection":
        cells = int(p["side"]) ** 2
        return Layout(kind, classes, num, 4, dict(cls=0, obj=cells * classes, box=cells * (classes + num)), ())
    raise ValueError(f"[{kind}] is not a detection head")


def layout_of(kind: str, p: dict) -> Layout:
    """The layout the graph stored, else (a bare parameter dict) the same rule applied to ``p``."""
    got = p.get("layout")
    return got if got is not None else layout(kind, p)
