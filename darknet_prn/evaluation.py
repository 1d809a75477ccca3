"""``darknet-prn map`` / ``valid`` and :func:`evaluate`: Darknet's ``detector map`` and ``detector valid``.

``map`` (``validate_detector_map``): the ``valid=`` images of the ``.data`` file, their labels by
``replace_image_to_label``, detections at Darknet's fixed confidence 0.005 (hier 0) with its NMS 0.45 (the
cfg's ``nms_kind``), scored by :mod:`darknet_prn.metrics`; the report is Darknet's, line for line.
``valid`` (``validate_detector``, ``eval=coco``): detections at 0.001 with NMS 0.6 (hier 0.5), written as COCO
results (``print_cocos``: boxes in pixels clipped to the image, image ids and category ids by
:mod:`darknet_prn.coco`); ``--coco-eval ANN.json`` scores them with pycocotools.

Python API::

    from darknet_prn import evaluate
    r = evaluate("coco6.data", "yolov3-tiny.cfg", "yolov3-tiny.weights")    # -> metrics.MapResult
    print(r.map, r.classes[16].ap); print("\\n".join(r.report_lines()))
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import preprocess as pre
from .dataset import DataConfig, LabelWarning, label_path, read_dataset, read_list
from .errors import DarknetError
from .fileio import atomic_write
from .metrics import MapAccumulator, MapResult

MAP_THRESH, MAP_NMS = 0.005, 0.45            # validate_detector_map
VALID_THRESH, VALID_NMS, VALID_HIER = 0.001, 0.6, 0.5    # validate_detector
EVAL_HINT = "pip install 'darknet-prn[eval]'"


# ---------------------------------------------------------------------------------------------------------------
# running the network over a list


@dataclass
class ImageDetections:
    """One image's detections as NMS leaves them, stored sparsely: ``boxes`` (n, 4) relative, and the
    (row, class, prob) triplets of the probabilities above 0."""
    path: str
    width: int
    height: int
    boxes: np.ndarray
    rows: np.ndarray
    cls: np.ndarray
    prob: np.ndarray
    truths: np.ndarray = field(default=None, repr=False)
    difficult: np.ndarray = field(default=None, repr=False)

    def dense(self, classes: int) -> np.ndarray:
        p = np.zeros((len(self.boxes), classes), np.float32)
        p[self.rows, self.cls] = self.prob
        return p


@dataclass
class MapDetections:
    """The detections and labels of a whole list: score them as often as needed (:meth:`score`)."""
    images: list
    classes: int
    names: list
    missing_images: list
    missing_labels: list
    seconds: float = 0.0

    def score(self, points: int = 0, iou_thresh: float = 0.5, thresh: float = 0.25) -> MapResult:
        check_options(points, iou_thresh, thresh)
        acc = MapAccumulator(self.classes, iou_thresh, thresh)
        for im in self.images:
            acc.add(im.boxes, im.dense(self.classes), im.truths, im.difficult)
        return acc.result(points, self.names)


def check_options(points: int, iou_thresh: float, thresh: float) -> None:
    """One-line errors for ``--points``, ``--iou-thresh`` and ``--thresh`` values Darknet would misuse."""
    if points != 0 and points < 2:
        raise DarknetError(f"--points {points}: use 0 (area under the curve), 11 or 101 (any N >= 2)")
    if not 0.0 <= iou_thresh <= 1.0:
        raise DarknetError(f"--iou-thresh {iou_thresh}: must be in [0, 1]")
    if not 0.0 <= thresh <= 1.0:
        raise DarknetError(f"--thresh {thresh}: must be in [0, 1]")


def _make_detector(cfg, weights, names, thresh, nms, hier, letterbox, device, backend, threads,
                   precision="f32"):
    from .detect import Detector
    return Detector(cfg, weights, names=names, thresh=thresh, nms=nms, hier=hier, letterbox=letterbox,
                    device=device, backend=backend, threads=threads, precision=precision)


def _letterbox(det, flag: bool, say) -> None:
    """Darknet's ``map`` uses the cfg's ``letter_box`` and ignores ``-letter_box``; we honour ``--letterbox`` too
    (saying that the numbers are then not Darknet's)."""
    if det.letterbox:
        if say:
            say("letterbox: from the cfg's letter_box=1" + (" (--letterbox is redundant)" if flag else ""))
    elif flag:
        if say:
            say("--letterbox: Darknet's `detector map` ignores -letter_box when the cfg has no letter_box=1; "
                "letterboxing anyway, so these numbers are not Darknet's")
        det.letterbox = True


def _load(det, path):
    """Decode + prepare one image (runs in the loader threads). A missing or unreadable image is Darknet's
    10x10 black image (``load_image_stb``), with the reason."""
    try:
        rgb = pre.read_image(path)
        err = None
    except DarknetError as e:
        rgb, err = np.zeros((10, 10, 3), np.uint8), e
    except Exception as e:  # noqa: BLE001 -- a corrupt file is one counted image, never a traceback
        rgb, err = np.zeros((10, 10, 3), np.uint8), DarknetError(f"cannot decode ({type(e).__name__}: {e})", path)
    h, w = rgb.shape[:2]
    return det.prepare(rgb), w, h, err


def run_detector(det, paths, batch_size: int = 1, progress: bool | None = None, desc: str = "map",
                 workers: int = 2):
    """Yields ``(path, width, height, Detections, error)`` for every image, in order. Images are decoded and
    resized in ``workers`` background threads while the network runs; a tqdm bar on a terminal."""
    from tqdm import tqdm
    if progress is None:
        progress = sys.stderr.isatty()
    bs = max(1, int(batch_size))
    ahead = max(2 * workers, bs * 2)
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="darknet-prn-load") as pool:
        futures = [pool.submit(_load, det, p) for p in paths[:ahead]]
        nxt = len(futures)
        done = 0
        while done < len(paths):
            chunk = []
            while len(chunk) < bs and done + len(chunk) < len(paths):
                chunk.append(futures[done + len(chunk)].result())
            for _ in chunk:
                if nxt < len(paths):
                    futures.append(pool.submit(_load, det, paths[nxt]))
                    nxt += 1
            per_image, _ = det.forward(np.stack([c[0] for c in chunk]))
            for (x, w, h, err), heads in zip(chunk, per_image):
                dets, _ = det.postprocess(heads, w, h)
                yield paths[done], w, h, dets, err
                futures[done] = None
                done += 1
                bar.update()
    bar.close()


def _sparse(path, w, h, dets) -> ImageDetections:
    rows, cls = np.nonzero(dets.probs > 0)
    return ImageDetections(path, int(w), int(h), np.asarray(dets.boxes, np.float32), rows.astype(np.int32),
                           cls.astype(np.int32), dets.probs[rows, cls].astype(np.float32))


def collect(data, cfg, weights, letterbox: bool = False, device="cpu", backend: str = "torch", threads=None,
            batch_size: int = 1, progress: bool | None = None, say=None, precision: str = "f32") -> MapDetections:
    """Run ``detector map``'s detection pass over the ``valid=`` list of ``data``: -> :class:`MapDetections`."""
    say = say or (lambda m: print(f"darknet-prn map: {m}", file=sys.stderr))
    dc = DataConfig.read(data)
    valid = dc.valid
    names_path = dc.names
    images = read_list(valid)
    if not images:
        raise DarknetError("the list of validation images is empty", valid)
    difficult = None
    if dc.get("difficult") is not None:
        difficult = read_list(dc.file("difficult"))
        if len(difficult) < len(images):
            raise DarknetError(f"difficult= lists {len(difficult)} images, valid= {len(images)}", dc.path,
                               dc.line("difficult"))
    det = _make_detector(cfg, weights, names_path, MAP_THRESH, MAP_NMS, 0.0, None, device, backend, threads,
                         precision=precision)
    _letterbox(det, letterbox, say)
    classes = det.classes
    if dc.classes is not None and dc.classes != classes:
        say(f"warning: {dc.path}: classes={dc.classes} but the cfg's detection layers have classes={classes} "
            f"(Darknet's map uses the cfg's)")
    # labels first: a bad label file fails before the network runs
    truths, missing_labels = read_dataset(images, classes, warn=False)
    difs = read_dataset(difficult[:len(images)], classes, warn=False)[0] if difficult is not None else None
    t0 = time.perf_counter()
    out, missing_images = [], []
    for k, (path, w, h, dets, err) in enumerate(run_detector(det, images, batch_size, progress)):
        if err is not None:
            missing_images.append(str(err))
        im = _sparse(path, w, h, dets)
        im.truths = truths[k]
        im.difficult = difs[k] if difs is not None else None
        out.append(im)
    secs = time.perf_counter() - t0
    if missing_images:
        say(f"warning: {len(missing_images)} of {len(images)} images could not be read and count as Darknet "
            f"counts them (a blank 10x10 image: their labels are missed objects); first: {missing_images[0]}")
    if missing_labels:
        say(f"warning: {len(missing_labels)} of {len(images)} images have no label file (images without "
            f"objects), e.g. {label_path(missing_labels[0])}")
    return MapDetections(out, classes, det.names, missing_images, missing_labels, secs)


def evaluate(data, cfg, weights, points: int = 0, iou_thresh: float = 0.5, thresh: float = 0.25,
             letterbox: bool = False, device="cpu", backend: str = "torch", threads=None, batch_size: int = 1,
             progress: bool | None = False, precision: str = "f32") -> MapResult:
    """Darknet's ``detector map DATA CFG WEIGHTS [-points N] [-iou_thresh T] [-thresh T]`` -> MapResult
    (``.map``, ``.classes[i].ap``, ``.report_lines()``, ``.to_json()``)."""
    c = collect(data, cfg, weights, letterbox=letterbox, device=device, backend=backend, threads=threads,
                batch_size=batch_size, progress=progress, precision=precision)
    return c.score(points, iou_thresh, thresh)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _common(parser):
    parser.add_argument("data", help="Darknet .data file (valid=, names=)")
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights file")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--backend", default="torch", choices=("torch", "exact", "onnxruntime", "openvino"),
                        help="inference engine (default torch)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's default)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16", "fp16"),
                        help="f32 (default, Darknet-exact), bf16 (CPUs with BF16, CUDA), fp16 (CUDA)")


def add_arguments(parser):
    """``map``'s arguments."""
    _common(parser)
    parser.add_argument("--points", type=int, default=0,
                        help="AP: 0 = area under the curve (default; VOC 2010+, ImageNet), 11 (VOC 2007), 101 (COCO)")
    parser.add_argument("--iou-thresh", type=float, default=0.5, help="IoU for a true positive (default 0.5)")
    parser.add_argument("--thresh", type=float, default=0.25,
                        help="confidence for the precision/recall/F1 and TP/FP/FN lines (default 0.25)")
    parser.add_argument("--letterbox", action="store_true",
                        help="letterbox even if the cfg has no letter_box=1 (Darknet's map ignores this flag)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PR curves, an AP bar chart and a confusion matrix "
                                                      "(needs matplotlib)")


def _check_common(args):
    if args.batch_size < 1:
        raise DarknetError(f"--batch-size {args.batch_size}: must be at least 1")


def run(args) -> int:
    """``darknet-prn map``."""
    _check_common(args)
    check_options(args.points, args.iou_thresh, args.thresh)
    if args.plot:
        from .plots import require_matplotlib
        require_matplotlib()
    with warnings.catch_warnings():
        warnings.simplefilter("always", LabelWarning)
        c = collect(args.data, args.cfg, args.weights, letterbox=args.letterbox, device=args.device,
                    backend=args.backend, threads=args.threads, batch_size=args.batch_size,
                    precision=args.precision)
    r = c.score(args.points, args.iou_thresh, args.thresh)
    sys.stdout.write("\n".join(r.report_lines()) + "\n")
    sys.stdout.flush()
    if args.json:
        d = r.to_json()
        d["seconds"] = c.seconds
        text = json.dumps(d, indent=1) + "\n"
        atomic_write(args.json, lambda f: f.write(text.encode()), "JSON")
    if args.plot:
        from .plots import write_plots
        files = write_plots(c, r, args.plot)
        print(f"darknet-prn map: plots: {', '.join(files)}", file=sys.stderr)
    return 0
