"""Where ``detect`` puts its results and in which formats: the run folder (``runs/detect/exp``, ``exp2``, ...),
destination checks made before any inference, YOLO label files (``--save-txt``), Darknet's ``-out result.json``
(``--darknet-json``), and the result rows of a run collected in input order (also across torchrun ranks)."""
from __future__ import annotations

import json
import os
import re

from . import coco
from .errors import DarknetError

DEFAULT_RUN_DIR = os.path.join("runs", "detect", "exp")


# ---------------------------------------------------------------------------------------------------------------
# destinations


def check_destination(option: str, path, kind: str = "file") -> None:
    """Fails before any work with a message naming ``option`` when ``path`` cannot be written: empty name, a
    directory where a file goes (``kind="file"``) or a file where a directory goes (``kind="dir"``), a parent
    that is a file, a folder without write permission."""
    if path is None:
        return
    p = os.fspath(path)
    if not p.strip():
        raise DarknetError(f"{option}: empty file name")
    if kind == "file" and os.path.isdir(p):
        raise DarknetError(f"{option}: {p} is a directory (give a file name)")
    if kind == "dir" and os.path.exists(p) and not os.path.isdir(p):
        raise DarknetError(f"{option}: {p} is a file (give a directory)")
    anc = os.path.abspath(p if kind == "dir" else os.path.dirname(os.path.abspath(p)))
    while not os.path.exists(anc):
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        raise DarknetError(f"{option}: {p}: {anc} is a file, not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise DarknetError(f"{option}: {p}: no permission to write in {anc}")


def increment_dir(path, exist_ok: bool = False) -> str:
    """``path`` if it does not exist, is empty or ``exist_ok``; else ``path2``, ``path3``, ... (the first that is
    free) -- as ultralytics names its ``runs/detect/exp`` folders, so a run never overwrites an earlier one."""
    p = os.path.normpath(os.fspath(path))
    if exist_ok or not _used(p):
        return p
    k = 2
    while _used(f"{p}{k}"):
        k += 1
    return f"{p}{k}"


def _used(p: str) -> bool:
    if not os.path.exists(p):
        return False
    return not os.path.isdir(p) or bool(os.listdir(p))


def stream_name(source: str) -> str:
    """A file name for a webcam index or a stream URL: ``webcam0``, ``rtsp_host_8554_live``."""
    if source.isdigit():
        return f"webcam{source}"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", source.split("?", 1)[0]).strip("_.")[:80] or "stream"


# ---------------------------------------------------------------------------------------------------------------
# formats


def yolo_label_text(detections: list, width: int, height: int, conf: bool = False) -> str:
    """YOLO label lines (``class cx cy w h`` relative to the image, box clipped to it; ``conf`` appends the
    confidence), one per detection -- what ultralytics ``--save-txt [--save-conf]`` writes and Darknet trains
    on."""
    lines = []
    for d in detections:
        x, y, bw, bh = coco.clip_box(*d["bbox"], width, height)
        vals = [(x + bw / 2) / width, (y + bh / 2) / height, bw / width, bh / height]
        if conf:
            vals.append(d["confidence"])
        lines.append(" ".join([str(d["class_id"])] + [f"{v:.6g}" for v in vals]))
    return "".join(line + "\n" for line in lines)


DARKNET_JSON_MIN_PROB = 0.005      # detection_to_json's own threshold


def darknet_json_objects(records: list, names: list) -> list:
    """The ``objects`` of one image as Darknet's ``detection_to_json`` lists them: detection by detection in
    the order NMS left them, classes in index order, probability above 0.005, ``dont_show`` names left out;
    ``[class_id, name, [x, y, w, h] relative, probability]`` each."""
    out = []
    for r in sorted(records, key=lambda r: (r["det"], r["class_id"])):
        c = r["class_id"]
        name = str(names[c]) if c < len(names) else str(c)
        if r["prob"] > DARKNET_JSON_MIN_PROB and not name.startswith("dont_show"):
            out.append([c, name, list(r["box"]), r["prob"]])
    return out


def darknet_json_text(entries: list) -> str:
    """Darknet's ``detector test ... -out result.json`` file, byte for byte: ``entries`` are ``(filename,
    objects)`` in order, ``frame_id`` counts from 1 (``test_detector``'s ``json_image_id``)."""
    parts = []
    for frame_id, (filename, objects) in enumerate(entries, 1):
        head = f'{{\n "frame_id":{frame_id}, \n "filename":{json.dumps(filename, ensure_ascii=False)}, \n "objects": [ \n'
        objs = [f'  {{"class_id":{c}, "name":{json.dumps(n, ensure_ascii=False)}, "relative_coordinates":{{'
                f'"center_x":{b[0]:f}, "center_y":{b[1]:f}, "width":{b[2]:f}, "height":{b[3]:f}}}, '
                f'"confidence":{p:f}}}' for c, n, b, p in objects]
        parts.append(head + ", \n".join(objs) + "\n ] \n}")
    return "[\n" + ", \n".join(parts) + "\n]"


# ---------------------------------------------------------------------------------------------------------------
# the rows of a run, in input order


class Collected:
    """Result rows of one run keyed by the input's position, so that parts computed by different ranks merge
    into the order of a single-process run."""

    KINDS = ("json", "coco", "darknet")

    def __init__(self):
        self.rows = {k: [] for k in self.KINDS}     # (input index, sequence, row)
        self._seq = 0

    def add(self, kind: str, index: int, rows: list):
        for r in rows:
            self.rows[kind].append((index, self._seq, r))
            self._seq += 1

    def state(self) -> dict:
        return {k: [[i, s, r] for i, s, r in v] for k, v in self.rows.items()}

    def merge(self, states: list):
        for st in states:
            for k in self.KINDS:
                self.rows[k].extend(tuple(t) for t in st.get(k, ()))

    def ordered(self, kind: str) -> list:
        return [r for _, _, r in sorted(self.rows[kind], key=lambda t: (t[0], t[1]))]
