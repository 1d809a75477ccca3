"""``darknet-prn valid``: Darknet's ``detector valid`` for COCO (``validate_detector`` with ``eval=coco``).

Detections at 0.001 with NMS 0.6 (hier 0.5, the cfg's ``letter_box``), written as COCO results the way
``print_cocos`` writes them (boxes in pixels, corners clipped to the image, values to ``%f``'s 6 decimals; image
ids and category ids by :mod:`darknet_prn.coco`); ``--coco-eval ANN.json`` scores them with pycocotools
(optional: ``pip install 'darknet-prn[eval]'``). Darknet writes ``results/<name>.json``; we write ``-o``.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from . import coco
from .dataset import DataConfig, read_list
from .errors import DarknetError
from .evaluation import (EVAL_HINT, VALID_HIER, VALID_NMS, VALID_THRESH, _check_common, _common, _make_detector,
                         run_detector)
from .fileio import atomic_write, read_input


def coco_results(det, paths, batch_size: int = 1, progress=None) -> tuple:
    """``print_cocos`` rows for every image -> (rows, names without a COCO number, unreadable images' errors:
    skipped)."""
    rows, unnumbered, unreadable = [], [], []
    F32 = np.float32
    for path, w, h, dets, err in run_detector(det, paths, batch_size, progress, desc="valid"):
        if err is not None:
            unreadable.append(str(err))
            continue
        image_id = coco.coco_image_id(path)
        if image_id is None:
            image_id = coco.basecfg(path)
            unnumbered.append(path)
        for i in range(len(dets)):
            bx, by, bw, bh = (float(v) for v in (F32(dets.boxes[i, 0]) * F32(w), F32(dets.boxes[i, 1]) * F32(h),
                                                 F32(dets.boxes[i, 2]) * F32(w), F32(dets.boxes[i, 3]) * F32(h)))
            box = [float(F32(v)) for v in (bx - bw / 2.0, by - bh / 2.0, bx + bw / 2.0, by + bh / 2.0)]
            x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
            x1, y1 = min(box[2], float(w)), min(box[3], float(h))
            xywh = [round(float(F32(v)), 6) for v in (x0, y0, F32(x1) - F32(x0), F32(y1) - F32(y0))]
            for j in np.flatnonzero(dets.probs[i, :det.classes] > 0):
                rows.append(coco.result_row(image_id, int(j), det.classes, xywh,
                                            round(float(dets.probs[i, j]), 6)))
    return rows, unnumbered, unreadable


def coco_eval(ann_path, results, image_ids=None) -> list:
    """Score COCO ``results`` (rows) against an annotation file with pycocotools -> its 12 ``stats`` (AP,
    AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl); the standard summary is printed."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise DarknetError(f"--coco-eval needs pycocotools: {EVAL_HINT}") from None
    ann_path = os.fspath(ann_path)
    raw = read_input(ann_path, DarknetError, "annotation file", "an annotation file", "annotation file")
    try:
        ann = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise DarknetError(f"not a COCO annotation JSON file ({e})", ann_path) from None
    if not isinstance(ann, dict) or "images" not in ann or "annotations" not in ann:
        raise DarknetError("not a COCO annotation file (needs 'images' and 'annotations')", ann_path)
    ann.setdefault("categories", [])
    known = {im["id"] for im in ann["images"]}
    ids = sorted(set(image_ids) & known) if image_ids is not None else sorted(known)
    if not ids:
        raise DarknetError("none of the evaluated images is in the annotation file (image ids "
                           f"{sorted(set(image_ids))[:5] if image_ids else []}...)", ann_path)
    gt = COCO()
    gt.dataset = ann
    gt.createIndex()
    rows = [r for r in results if r["image_id"] in known]
    if not rows:
        return [0.0] * 12
    dt = gt.loadRes(rows)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.imgIds = ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats]



def add_arguments(parser):
    """``valid``'s arguments."""
    _common(parser)
    parser.add_argument("-o", "--out", metavar="FILE", required=True, help="COCO results JSON to write")
    parser.add_argument("--coco-eval", metavar="ANN", help="score with pycocotools against a COCO annotation file")


def run(args) -> int:
    """``darknet-prn valid``."""
    _check_common(args)
    if args.coco_eval:     # fail before the detection pass, not after
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise DarknetError(f"--coco-eval needs pycocotools: {EVAL_HINT}") from None
        if not os.path.isfile(args.coco_eval):
            raise DarknetError("annotation file not found", args.coco_eval)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or not os.path.isdir(out_dir):
        raise DarknetError("-o: " + ("is a directory" if os.path.isdir(args.out) else "its folder does not exist"),
                           args.out)
    dc = DataConfig.read(args.data)
    images = read_list(dc.valid)
    if not images:
        raise DarknetError("the list of validation images is empty", dc.valid)
    det = _make_detector(args.cfg, args.weights, dc.file("names", required=False), VALID_THRESH, VALID_NMS,
                         VALID_HIER, None, args.device, args.backend, args.threads, precision=args.precision)
    rows, unnumbered, unreadable = coco_results(det, images, args.batch_size)
    if unreadable:
        print(f"darknet-prn valid: warning: {len(unreadable)} of {len(images)} images could not be read and are "
              f"skipped; first: {unreadable[0]}", file=sys.stderr)
    if unnumbered:
        print(f"darknet-prn valid: warning: {len(unnumbered)} image names carry no COCO number (e.g. "
              f"{unnumbered[0]}): their image_id is the name", file=sys.stderr)
    text = json.dumps(rows) + "\n"
    atomic_write(args.out, lambda f: f.write(text.encode()), "COCO results")
    print(f"darknet-prn valid: {len(rows)} detections of {len(images)} images -> {args.out}", file=sys.stderr)
    if args.coco_eval:
        ids = {coco.coco_image_id(p) for p in images} - {None}
        coco_eval(args.coco_eval, rows, ids)
    return 0
