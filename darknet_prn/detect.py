"""``darknet-prn detect`` and the :class:`Detector` API: Darknet's ``detector test`` in PyTorch.

Pipeline (spec §3.10): decode like stb_image -> ``resize_image`` or ``letterbox_image`` -> network ->
``get_network_boxes`` -> ``do_nms_sort`` (or the head's ``nms_kind``) -> ``draw_detections_v3`` ordering.
The printed lines are Darknet's ``-ext_output`` lines, in Darknet's order.

Python API::

    from darknet_prn import Detector
    det = Detector("yolov3-tiny.cfg", "yolov3-tiny.weights")       # names: coco.names beside the weights
    det.detect("dog.jpg")              # -> [{"class_id", "name", "confidence", "bbox", "relative"}, ...]
    det.detect(bgr_array)              # numpy (H, W, 3) uint8, **BGR** (OpenCV's order); rgb=True for RGB
    det.detect(["a.jpg", "b.jpg"])     # a batch -> one list per image

``bbox`` is ``[left, top, width, height]`` in pixels (floats, not clipped, as Darknet computes them) and
``relative`` is ``[x, y, w, h]`` (box centre and size relative to the image).
"""
from __future__ import annotations

import gc
import glob
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import coco
from . import postprocess as post
from . import preprocess as pre
from .dataset import names_from_data  # noqa: F401 -- re-exported (it used to live here)
from .engines import BACKENDS
from .errors import DarknetError
from .fileio import atomic_path, atomic_write, read_input, regular_file_problem
from .outputs import (DEFAULT_RUN_DIR, Collected, check_destination, darknet_json_objects, darknet_json_text,
                      increment_dir, stream_name, yolo_label_text)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ts", ".mts", ".m2ts", ".ogv", ".asf", ".vob")
_WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = set("*?[")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtp", "udp", "tcp", "srt", "http", "https")



# ---------------------------------------------------------------------------------------------------------------
# class names


def read_names(path) -> list:
    """A Darknet ``.names`` file: one name per line (trailing blank lines ignored)."""
    p = os.fspath(path)
    text = read_input(p, DarknetError, "names file", "a names file", "names file").decode("utf-8", errors="replace")
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DarknetError("names file is empty", p)
    return names


def resolve_names(classes: int, names=None, data=None, weights=None, cfg=None) -> tuple:
    """``(names list, source path or None)``: ``names`` (a file or a list), else ``data``'s ``names=``, else
    ``coco.names`` beside the weights (or the cfg) when there are 80 classes, else numeric ids."""
    src = None
    if names is not None and not isinstance(names, (str, bytes, os.PathLike)):
        lst = [str(n) for n in names]
        if len(lst) != classes:
            raise DarknetError(f"{len(lst)} class names given but the cfg's detection layers have {classes} classes")
        return lst, None
    if names is not None:
        src = os.fspath(names)
    elif data is not None:
        src = names_from_data(data)
    if src is not None:
        lst = read_names(src)
        if len(lst) != classes:
            raise DarknetError(f"has {len(lst)} class names but the cfg's detection layers have classes={classes}",
                               src)
        return lst, src
    if classes == 80:
        for ref in (weights, cfg):
            if ref is None:
                continue
            cand = os.path.join(os.path.dirname(os.path.abspath(os.fspath(ref))), "coco.names")
            if os.path.isfile(cand):
                lst = read_names(cand)
                if len(lst) == 80:
                    return lst, cand
    return [str(i) for i in range(classes)], None


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class ImageResult:
    """Detections of one image (or video frame)."""
    image: str
    width: int
    height: int
    detections: list                      # dicts: class_id, name, confidence, bbox, relative
    records: list = field(default_factory=list, repr=False)   # postprocess.darknet_order records
    ms: float = 0.0
    frame: int | None = None

    def to_json(self) -> dict:
        d = {"image": self.image, "width": self.width, "height": self.height}
        if self.frame is not None:
            d["frame"] = self.frame
        d["detections"] = self.detections
        return d

    def darknet_lines(self) -> list:
        """Darknet's stdout for this image (``-ext_output``), without the newline characters."""
        label = self.image if self.frame is None else f"{self.image}#{self.frame}"
        out = [f"{label}: Predicted in {self.ms:f} milli-seconds."]
        for r, d in zip(self.records, self.detections):
            out.append(post.format_line(d["name"], r["prob"], r["pixels"]))
        return out


def _detection_dicts(records, names) -> list:
    n = len(names)
    return [{"class_id": r["class_id"], "name": names[r["class_id"]] if r["class_id"] < n else str(r["class_id"]),
             "confidence": r["prob"], "bbox": [r["left"], r["top"], r["width"], r["height"]],
             "relative": list(r["box"])} for r in records]


# ---------------------------------------------------------------------------------------------------------------
# the detector


def check_thresholds(**values):
    """``thresh``/``nms``/``hier`` must be numbers in [0, 1] (``nms`` may be None: no NMS)."""
    for name, v in values.items():
        if v is None and name == "nms":
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        if not 0.0 <= f <= 1.0:        # also NaN
            raise DarknetError(f"--{name} {v}: must be a number between 0 and 1")


def _resolve_device(device):
    import torch
    try:
        dev = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError, ValueError):
        raise DarknetError(f"--device {device}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DarknetError(f"--device {device}: CUDA is not available to this torch {torch.__version__}")
    if dev.type not in ("cpu", "cuda"):
        raise DarknetError(f"--device {device}: only cpu and cuda are supported")
    return dev


class Detector:
    """Darknet's ``detector test`` as an object.

    Parameters: ``cfg`` (path), ``weights`` (path or None for random weights), ``names`` (a ``.names`` file or a
    list; default: ``coco.names`` beside the weights when there are 80 classes, else ``"0"``, ``"1"``, ...),
    ``data`` (a Darknet ``.data`` file whose ``names=`` is used), ``thresh`` (0.25), ``nms`` (0.45; 0 or None
    disables NMS), ``hier`` (0.5, tree heads), ``letterbox`` (None: the cfg's ``[net] letter_box``),
    ``device`` ('cpu' or 'cuda'), ``width``/``height`` (override the cfg's input size), ``partial`` (load a
    ``.weights`` file that does not fit the cfg as far as it goes, with a warning), ``backend`` (the inference
    engine: ``torch`` (default fast path), ``exact``, ``onnxruntime``, ``openvino``; see docs/performance.md),
    ``threads`` (intra-op threads), ``precision`` (``f32`` default, Darknet-exact; ``bf16`` on CPUs with BF16
    and CUDA, ``fp16`` on CUDA: the convolutions in that precision, decoding and NMS in float32), ``classes``
    (keep only these class ids) and ``max_det`` (keep the ``max_det`` most confident detections of each image).
    """

    def __init__(self, cfg, weights=None, names=None, thresh: float = 0.25, nms: float = 0.45, letterbox=None,
                 device="cpu", data=None, hier: float = 0.5, width=None, height=None, partial: bool = False,
                 backend: str = "torch", threads=None, classes=None, max_det=None, precision: str = "f32"):
        import torch
        from .model import Darknet
        check_thresholds(thresh=thresh, nms=nms, hier=hier)
        if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
            raise DarknetError(f"--threads {threads}: must be at least 1")
        if max_det is not None and (isinstance(max_det, bool) or int(max_det) != max_det or max_det < 1):
            raise DarknetError(f"--max-det {max_det}: must be at least 1")
        self.device = _resolve_device(device)
        self.net = Darknet.from_cfg(cfg, width=width, height=height)
        onnx_model = None
        if weights is not None and os.fspath(weights).lower().endswith(".onnx"):
            onnx_model = weights        # an ONNX model of the cfg (darknet-prn quantize/export) instead of .weights
            backend = "onnxruntime" if backend == "torch" else backend
        elif weights is not None:
            self.net.load_weights(weights, partial=partial)
        self.net.eval()
        self.net.to(self.device)
        self.net.set_backend(backend, threads=threads, precision=precision, model=onnx_model)
        self._torch = torch
        g = self.net.graph
        self.cfg = os.fspath(cfg)
        self.head_indices = list(g.heads)
        if not self.head_indices:
            raise DarknetError("the cfg has no detection layer ([yolo], [Gaussian_yolo], [region] or [detection])",
                               self.cfg)
        self.head_layers = [g.layers[i] for i in self.head_indices]
        for l in self.head_layers:
            tree = l.p.get("tree")
            if isinstance(tree, dict) and "missing" in tree:
                raise DarknetError(f"[region] tree file {tree['missing']} not found", l.where)
        self.nms_kind, self.beta_nms, nms_classes = post.nms_settings(self.head_layers)
        self.classes = max(int(l.p.get("classes", 0)) for l in self.head_layers)
        self.nms_classes = nms_classes or self.classes
        self.names, self.names_path = resolve_names(self.classes, names, data, weights, cfg)
        self.numeric_names = names is None and self.names_path is None     # labels fell back to class numbers
        self.keep_classes = None
        if classes is not None:
            self.keep_classes = frozenset(int(c) for c in classes)
            bad = sorted(c for c in self.keep_classes if not 0 <= c < self.classes)
            if bad:
                raise DarknetError(f"--classes {' '.join(map(str, bad))}: the model has {self.classes} classes "
                                   f"(0..{self.classes - 1})", self.cfg)
        self.max_det = None if max_det is None else int(max_det)
        self.thresh = float(thresh)
        self.nms = None if nms is None else float(nms)
        self.hier = float(hier)
        self.letterbox = bool(g.net.get("letter_box", 0)) if letterbox is None else bool(letterbox)
        self.net_w, self.net_h, self.channels = int(g.width), int(g.height), int(g.channels)
        if self.channels != 3:
            raise DarknetError(f"channels={self.channels}: detect needs a 3-channel (RGB) network", self.cfg)
        # Loading made ~10^5 long-lived Python objects; collect now, not in a 70 ms full collection that the
        # interpreter would otherwise start in the middle of detecting some later image.
        gc.collect()

    # -- low level ---------------------------------------------------------------------------------
    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> the (3, net_h, net_w) float32 network input (Darknet's resize/letterbox)."""
        return pre.prepare(rgb, self.net_w, self.net_h, letterbox=self.letterbox)

    def forward(self, batch: np.ndarray):
        """``(N, 3, H, W)`` float32 -> (per-image list of head arrays, milliseconds of the forward pass)."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        cuda = self.device.type == "cuda"
        if cuda:   # TF32 would move confidences by more than Darknet's own noise
            saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            torch.cuda.synchronize(self.device)
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                heads = self.net(x)
            if cuda:
                torch.cuda.synchronize(self.device)
            ms = (time.perf_counter() - t0) * 1000.0
        finally:
            if cuda:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        heads = [h.detach().float().cpu().numpy() for h in heads]
        return [[h[i] for h in heads] for i in range(x.shape[0])], ms

    def postprocess(self, heads, im_w: int, im_h: int):
        """One image's head arrays -> ``(Detections after NMS, darknet_order records)``."""
        dets = post.get_network_boxes(heads, self.head_layers, im_w, im_h, self.net_w, self.net_h, self.thresh,
                                      self.hier, self.letterbox)
        if self.nms:
            dets = post.nms(dets, self.nms, self.nms_kind, self.beta_nms, self.nms_classes)
        records = post.darknet_order(dets, im_w, im_h, self.thresh, self.names)
        if self.keep_classes is not None:
            records = [r for r in records if r["class_id"] in self.keep_classes]
        if self.max_det is not None and len(records) > self.max_det:
            top = sorted(range(len(records)), key=lambda i: -records[i]["prob"])[:self.max_det]
            records = [records[i] for i in sorted(top)]
        return dets, records

    def run(self, images, labels=None, frames=None) -> list:
        """Detect on a list of uint8 **RGB** arrays in one batch -> list of :class:`ImageResult`."""
        if not images:
            return []
        batch = np.stack([self.prepare(im) for im in images])
        per_image, ms = self.forward(batch)
        results = []
        for i, (im, heads) in enumerate(zip(images, per_image)):
            h, w = im.shape[:2]
            _, records = self.postprocess(heads, w, h)
            results.append(ImageResult(
                image=labels[i] if labels else "", width=int(w), height=int(h),
                detections=_detection_dicts(records, self.names), records=records, ms=ms / len(images),
                frame=frames[i] if frames else None))
        return results

    # -- API -----------------------------------------------------------------------------------------
    def load(self, image, rgb: bool = False) -> np.ndarray:
        """A path or a uint8 array (BGR unless ``rgb``) -> uint8 RGB (H, W, 3)."""
        if isinstance(image, (str, bytes, os.PathLike)):
            return pre.read_image(os.fsdecode(image))
        a = np.asarray(image)
        a = pre._check_array(a)
        return np.ascontiguousarray(a if rgb else a[:, :, ::-1])

    def detect(self, image, rgb: bool = False, batch_size: int = 8, errors: str = "return"):
        """Detect objects. ``image``: a path, a numpy ``(H, W, 3)`` uint8 array (**BGR** as OpenCV gives it;
        pass ``rgb=True`` for RGB), or a list/tuple of those (a batch). Returns a list of detection dicts for
        one image and a list of such lists for a batch. One image that cannot be read raises
        :class:`DarknetError`; in a batch its entry *is* that DarknetError (the other images' results are kept;
        ``errors="raise"``: raise the first one instead)."""
        if errors not in ("return", "raise"):
            raise DarknetError(f"errors={errors!r}: use 'return' or 'raise'")
        single = not isinstance(image, (list, tuple))
        items = [image] if single else list(image)
        bs = max(1, int(batch_size))
        out = []
        for s in range(0, len(items), bs):
            loaded = []
            for it in items[s:s + bs]:
                try:
                    loaded.append(self.load(it, rgb))
                except DarknetError as e:
                    if single or errors == "raise":
                        raise
                    loaded.append(e)
            good = iter(self.run([im for im in loaded if not isinstance(im, DarknetError)]))
            out.extend(im if isinstance(im, DarknetError) else next(good).detections for im in loaded)
        return out[0] if single else out

    __call__ = detect

    def annotate(self, image, detections, rgb: bool = False) -> np.ndarray:
        """Draw ``detections`` (from :meth:`detect`) on a copy of ``image``; returns BGR uint8 (or RGB if
        ``rgb``)."""
        bgr = self.load(image, rgb)[:, :, ::-1]
        out = draw_detections(np.ascontiguousarray(bgr), detections, self.classes)
        return out[:, :, ::-1].copy() if rgb else out


# ---------------------------------------------------------------------------------------------------------------
# drawing


def class_color(class_id: int, classes: int) -> tuple:
    """Darknet's per-class colour (``draw_detections_v3``: offset ``class*123457 % classes``) as BGR 0..255."""
    colors = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))
    classes = max(int(classes), 1)
    offset = (class_id * 123457) % classes

    def get(c):
        ratio = (offset / classes) * 5
        i, j = int(math.floor(ratio)), int(math.ceil(ratio))
        ratio -= i
        return (1 - ratio) * colors[i][c] + ratio * colors[j][c]

    r, g, b = get(2), get(1), get(0)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_label(box, lw: int, lh: int, w: int, h: int, placed: list) -> tuple:
    """Where a ``lw`` x ``lh`` label of ``box`` (x0, y0, x1, y1) goes: ``(x0, y0, x1, y1)`` inside the image, not
    covering any rectangle of ``placed`` if that can be had. Preferred: on the box's top edge, outside (as
    Darknet draws it), else just inside (a box touching the top of the image), else below or at the bottom of the
    box, else the nearest free spot in a column from the box's top edge down."""
    bx0, by0, bx1, by1 = box
    lw, lh = min(lw, w), min(lh, h)
    x = min(max(bx0, 0), w - lw)                      # a box at the right edge keeps its label in the image
    ys = [by0 - lh, by0, by1, by1 - lh]
    ys += [by0 + k * lh for k in range(1, max(1, (h - by0) // max(lh, 1)) + 1)]
    ys += [by0 - lh - k * lh for k in range(1, max(0, (by0 - lh) // max(lh, 1)) + 1)]
    for y in ys:
        if 0 <= y <= h - lh:
            r = (x, y, x + lw, y + lh)
            if not any(_overlaps(r, p) for p in placed):
                return r
    y = min(max(by0 - lh, 0), h - lh)
    return (x, y, x + lw, y + lh)


def draw_detections(bgr: np.ndarray, detections: list, classes: int) -> np.ndarray:
    """Boxes and labels (one colour per class, OpenCV drawing) on a copy of a BGR uint8 image. All boxes are
    drawn first, then the labels, most confident first, each where it covers no other label (:func:`place_label`)
    and always inside the image; the text is black or white, whichever reads better on the class colour."""
    import cv2
    img = bgr.copy()
    h, w = img.shape[:2]
    thick = max(1, int(round(min(h, w) * 0.004)))
    scale = max(0.35, min(h, w) / 900.0)
    text_thick = max(1, thick // 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    groups = {}
    for d in detections:      # one box per detection: group the classes sharing a box
        key = tuple(round(v, 3) for v in d["bbox"])
        groups.setdefault(key, []).append(d)
    boxes = []
    for ds in groups.values():
        left, top, bw, bh = ds[0]["bbox"]
        x0 = int(np.clip(round(left), 0, w - 1))
        y0 = int(np.clip(round(top), 0, h - 1))
        x1 = int(np.clip(round(left + bw), 0, w - 1))
        y1 = int(np.clip(round(top + bh), 0, h - 1))
        color = class_color(ds[0]["class_id"], classes)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thick)
        label = ", ".join(f"{d['name']} {d['confidence'] * 100:.0f}%" for d in ds)
        boxes.append((max(d["confidence"] for d in ds), (x0, y0, x1, y1), color, label))
    placed = []
    for _, box, color, label in sorted(boxes, key=lambda b: -b[0]):
        (tw, th), base = cv2.getTextSize(label, font, scale, text_thick)
        r = place_label(box, tw + 4, th + base + 4, w, h, placed)
        placed.append(r)
        cv2.rectangle(img, (r[0], r[1]), (r[2] - 1, r[3] - 1), color, -1)
        ink = (0, 0, 0) if 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2] >= 128 else (255, 255, 255)
        cv2.putText(img, label, (r[0] + 2, r[3] - base - 2), font, scale, ink, text_thick, cv2.LINE_AA)
    return img


def write_image(path: str, bgr: np.ndarray):
    """``cv2.imwrite`` that also works for non-ASCII paths; raises :class:`DarknetError`."""
    import cv2
    ext = os.path.splitext(path)[1].lower() or ".jpg"
    try:
        ok, buf = cv2.imencode(ext, bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise DarknetError("cannot encode the annotated image", path)
    atomic_write(path, lambda f: f.write(buf.tobytes()), "the annotated image", make_dirs=True)


# ---------------------------------------------------------------------------------------------------------------
# inputs


@dataclass
class InputItem:
    kind: str            # "image" | "video" | "stream" (webcam index or URL) | "error"
    path: str            # as printed
    rel: str = ""        # path under --out
    error: str = ""
    from_dir: bool = False


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in pre.IMAGE_EXTENSIONS


def _walk_images(root: str) -> list:
    """Image files under ``root``, sorted; symlinked directories are followed, each real directory once (a
    symlink loop or a second link to a folder adds nothing)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for fn in sorted(filenames):
            if _is_image_name(fn) and not fn.startswith("."):
                found.append(os.path.join(dirpath, fn))
    return found


def _file_item(path: str, rel: str, from_dir: bool = False) -> InputItem:
    """An image or video item, or an error item for a FIFO, device or socket (reading one would block)."""
    problem = regular_file_problem(path)
    if problem:
        return InputItem("error", path, error=problem)
    return InputItem("video" if _is_video(path) else "image", path, rel, from_dir=from_dir)


def discover_inputs(args_inputs) -> list:
    """Expand files, directories (recursively, image extensions), glob patterns and videos into
    :class:`InputItem`s in order; problems become ``kind="error"`` items (reported, then skipped)."""
    items = []
    for raw in args_inputs:
        arg = os.fspath(raw)
        scheme = arg.split("://", 1)[0].lower() if "://" in arg else ""
        if scheme in ("http", "https", "ftp") and _is_image_name(arg.split("?", 1)[0]):
            items.append(InputItem("error", arg, error="image URLs are not downloaded: save the image and give "
                                                      "its path"))
        elif scheme in STREAM_SCHEMES or (arg.isdigit() and not os.path.exists(arg)):
            items.append(InputItem("stream", arg, stream_name(arg) + ".mp4"))
        elif os.path.isdir(arg):
            imgs = _walk_images(arg)
            if not imgs:
                items.append(InputItem("error", arg, error="directory contains no images (looked for "
                                                          + ", ".join(pre.IMAGE_EXTENSIONS[:6]) + ", ...)"))
            for p in imgs:
                items.append(InputItem("image", p, os.path.relpath(p, arg), from_dir=True))
        elif os.path.exists(arg):
            items.append(_file_item(arg, os.path.basename(arg)))
        elif _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            files = []
            for m in matches:
                if os.path.isdir(m):
                    files.extend((p, os.path.relpath(p, m)) for p in _walk_images(m))
                elif _is_video(m) or _is_image_name(m):
                    files.append((m, os.path.basename(m)))
            if not files:
                items.append(InputItem("error", arg, error="no image or video matches this pattern"))
            for p, rel in files:
                items.append(_file_item(p, rel, from_dir=True))
        else:
            items.append(InputItem("error", arg, error="no such file or directory"))
    return items


# ---------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser):
    """Register ``detect``'s arguments on an argparse (sub)parser."""
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights file (or an ONNX model of the cfg: darknet-prn quantize)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="images, directories (searched recursively), glob patterns, video files, a webcam "
                             "index (0) or a stream URL (rtsp://...)")
    parser.add_argument("--thresh", type=float, default=0.25, help="confidence threshold (default 0.25)")
    parser.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default 0.45; 0 disables)")
    parser.add_argument("--hier", type=float, default=0.5, help="hierarchy threshold of tree [region] heads (0.5)")
    lb = parser.add_mutually_exclusive_group()
    lb.add_argument("--letterbox", dest="letterbox", action="store_true", default=None,
                    help="letterbox the input (default: the cfg's [net] letter_box)")
    lb.add_argument("--no-letterbox", dest="letterbox", action="store_false",
                    help="plain resize even if the cfg says letter_box=1")
    parser.add_argument("--names", metavar="FILE", help="class names file (one per line)")
    parser.add_argument("--data", metavar="FILE", help="Darknet .data file; its names= file is used")
    parser.add_argument("--classes", type=int, nargs="+", metavar="ID", help="keep only these class ids")
    parser.add_argument("--max-det", type=int, metavar="N", help="keep the N most confident detections per image")
    parser.add_argument("--json", metavar="FILE", help="write detections as JSON to FILE ('-' for stdout)")
    parser.add_argument("--coco", metavar="FILE", help="write detections in COCO results format to FILE")
    parser.add_argument("--darknet-json", metavar="FILE",
                        help="write detections as Darknet's `detector test -out FILE` does")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help=f"folder for annotated images, videos and labels (default {DEFAULT_RUN_DIR}; a used "
                             f"folder gets a number: exp2, exp3, ...)")
    parser.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier run")
    parser.add_argument("--no-save", action="store_true", help="do not write annotated images/videos")
    parser.add_argument("--save-txt", action="store_true",
                        help="write YOLO label files (class cx cy w h, relative) to DIR/labels/")
    parser.add_argument("--save-conf", action="store_true", help="--save-txt: append the confidence to each line")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--backend", default="torch", choices=tuple(BACKENDS),
                        help="inference engine (default torch: the fast path; see docs/performance.md)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: OMP_NUM_THREADS, else the CPUs this process may "
                        "use)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16", "fp16"),
                        help="f32 (default, Darknet-exact); bf16 (CPUs with BF16, CUDA) or fp16 (CUDA): faster "
                             "convolutions, decoding and NMS stay f32")
    parser.add_argument("--width", type=int, help="override the cfg's [net] width")
    parser.add_argument("--height", type=int, help="override the cfg's [net] height")
    parser.add_argument("--partial", action="store_true",
                        help="load a .weights file that does not fit the cfg as far as it goes (with a warning)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bar and no Darknet-style detection lines (errors and where the outputs "
                             "went are still printed)")


add_detect_arguments = add_arguments


def check_options(args):
    """Every option that can be checked before the model loads; a one-line DarknetError naming the option."""
    check_thresholds(thresh=args.thresh, nms=args.nms, hier=args.hier)
    for opt in ("batch_size", "threads", "max_det", "width", "height"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise DarknetError(f"--{opt.replace('_', '-')} {v}: must be at least 1")
    if args.names and args.data:
        raise DarknetError("give either --names or --data, not both")
    if args.save_conf and not args.save_txt:
        raise DarknetError("--save-conf needs --save-txt")
    for opt in ("json", "coco", "darknet_json"):
        v = getattr(args, opt)
        if v is not None and v != "-":
            check_destination(f"--{opt.replace('_', '-')}", v)
    if sum(getattr(args, o) == "-" for o in ("json", "coco", "darknet_json")) > 1:
        raise DarknetError("only one of --json, --coco, --darknet-json can be '-' (stdout)")
    if args.out is not None:
        check_destination("--out", args.out, kind="dir")


class _Session:
    """State of one ``detect`` run: output folder and names, collected rows, error count, progress."""

    def __init__(self, args, det: Detector, world):
        self.args = args
        self.det = det
        self.world = world
        self.errors = 0
        self.rows = Collected()
        self.used_out = set()
        self.saved = {"images": 0, "videos": 0, "labels": 0}
        self.text = not args.quiet and "-" not in (args.json, args.coco, args.darknet_json)
        self.progress = not (args.quiet or args.no_progress) and world.main and sys.stderr.isatty()
        self.bar = None
        self.out_dir = None
        if not args.no_save or args.save_txt:
            out = args.out if args.out is not None else DEFAULT_RUN_DIR
            self.out_dir = world.broadcast(increment_dir(out, args.exist_ok) if world.main else None)

    def new_bar(self, total, desc: str, unit: str, enabled: bool = True):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not (self.progress and enabled),
                        dynamic_ncols=True, leave=False)
        return self.bar

    def tick(self):
        if self.bar is not None:
            self.bar.update()

    def close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, text: str, stream):
        if self.bar is not None and not self.bar.disable:
            from tqdm import tqdm
            tqdm.write(text, file=stream)     # clears the bar, writes, redraws it
        else:
            stream.write(text + "\n")
        stream.flush()

    def error(self, err):
        self.errors += 1
        msg = str(err) if isinstance(err, DarknetError) else f"{type(err).__name__}: {err}"
        self.write(f"darknet-prn detect: error: {msg}", sys.stderr)

    def out_path(self, rel: str, force_ext: str | None = None) -> str:
        base, ext = os.path.splitext(rel)
        if force_ext:
            ext = force_ext
        elif ext.lower() not in _WRITABLE:
            ext = ".jpg"
        cand = os.path.join(self.out_dir, base + ext)
        k = 1
        while cand in self.used_out:
            cand = os.path.join(self.out_dir, f"{base}_{k}{ext}")
            k += 1
        self.used_out.add(cand)
        return cand

    def emit(self, index: int, res: ImageResult, image_out: str | None = None):
        """Report one image's (or frame's) result: text, rows of the JSON outputs, its label file."""
        args = self.args
        if self.text:
            self.write("\n".join(res.darknet_lines()), sys.stdout)
        if args.json:
            self.rows.add("json", index, [res.to_json()])
        if args.coco:
            self.rows.add("coco", index, coco_rows(res, self.det.classes))
        if args.darknet_json:
            label = res.image if res.frame is None else f"{res.image}#{res.frame}"
            self.rows.add("darknet", index, [[label, darknet_json_objects(res.records, self.det.names)]])
        if args.save_txt and image_out is not None:
            rel = os.path.relpath(os.path.splitext(image_out)[0], self.out_dir)
            if res.frame is not None:
                rel = f"{rel}_{res.frame}"
            path = os.path.join(self.out_dir, "labels", rel + ".txt")
            text = yolo_label_text(res.detections, res.width, res.height, args.save_conf)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write(path, lambda f: f.write(text.encode()), "label file")
                self.saved["labels"] += 1
            except (OSError, DarknetError) as e:
                self.error(e if isinstance(e, DarknetError) else DarknetError(f"cannot write: {e}", path))

    def finish(self) -> int:
        """Merge the ranks' rows (rank 0 writes the files), print where everything went; the exit status."""
        args, world = self.args, self.world
        states = world.gather((self.rows.state(), self.errors, self.saved))
        if not world.main:
            return 1 if self.errors else 0
        merged = Collected()
        merged.merge(st for st, _, _ in states)
        errors = sum(e for _, e, _ in states)
        saved = {k: sum(sv[k] for _, _, sv in states) for k in self.saved}
        written = []
        for opt, kind, what in (("json", "json", "JSON"), ("coco", "coco", "COCO"),
                                ("darknet_json", "darknet", "Darknet JSON")):
            dest = getattr(args, opt)
            if not dest:
                continue
            rows = merged.ordered(kind)
            text = darknet_json_text(rows) if kind == "darknet" else json.dumps(rows, indent=1)
            try:
                _write_text(dest, text, what)
                if dest != "-":
                    written.append(f"{what} {dest}")
                if kind == "coco" and args.thresh > 0.005:
                    print("darknet-prn detect: note: COCO mAP needs low-confidence detections too: use --thresh "
                          "0.005, or `darknet-prn valid` (Darknet's 0.001, NMS 0.6)", file=sys.stderr)
            except DarknetError as e:
                errors += 1
                print(f"darknet-prn detect: error: {e}", file=sys.stderr, flush=True)
        if self.out_dir is not None and any(saved.values()):
            what = ", ".join(f"{n} {k if n != 1 else k[:-1]}" for k, n in saved.items() if n)
            written.insert(0, f"{self.out_dir} ({what})")
        if written:
            print("Results saved to " + "; ".join(written), file=sys.stderr, flush=True)
        return 1 if errors else 0


def coco_rows(res: ImageResult, classes: int) -> list:
    """COCO results rows (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] clipped to the image, ``score``) as
    Darknet's ``print_cocos``: image_id as :func:`coco.coco_image_id` derives it (``COCO_val2014_000000000042.jpg``
    -> 42), else the name; category ids mapped to COCO's 1..90 when the head has 80 classes."""
    stem = os.path.splitext(os.path.basename(res.image))[0]
    image_id = coco.coco_image_id(res.image)
    if image_id is None:
        image_id = stem
    if res.frame is not None:
        image_id = f"{stem}#{res.frame}"
    return [coco.result_row(image_id, d["class_id"], classes,
                            coco.clip_box(*d["bbox"], res.width, res.height), d["confidence"])
            for d in res.detections]


def _write_text(path: str, text: str, what: str):
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    atomic_write(path, lambda f: f.write((text + "\n").encode("utf-8")), f"the {what} file", make_dirs=True)


def _process_images(s: _Session, items: list):
    """``items``: ``(input index, InputItem)`` of images, run in batches of ``--batch-size``."""
    args, det = s.args, s.det
    bs = max(1, int(args.batch_size))
    s.new_bar(len(items), "detect", "img", enabled=len(items) > 1)
    pending = []

    def flush():
        if not pending:
            return
        try:
            results = det.run([p[2] for p in pending], labels=[p[1].path for p in pending])
        except Exception as e:  # noqa: BLE001 -- report, keep going with the next batch
            if os.environ.get("DARKNET_PRN_DEBUG"):
                raise
            for _, it, _ in pending:
                s.error(e if isinstance(e, DarknetError) else
                        DarknetError(f"detection failed ({type(e).__name__}: {e})", it.path))
                s.tick()
            pending.clear()
            return
        for (index, it, rgb), res in zip(pending, results):
            out = s.out_path(it.rel or os.path.basename(it.path)) if s.out_dir is not None else None
            s.emit(index, res, out)
            if not args.no_save:
                try:
                    write_image(out, draw_detections(np.ascontiguousarray(rgb[:, :, ::-1]), res.detections,
                                                     det.classes))
                    s.saved["images"] += 1
                except DarknetError as e:
                    s.error(e)
            s.tick()
        pending.clear()

    for index, it in items:
        try:
            rgb = pre.read_image(it.path)
        except DarknetError as e:
            s.error(e)
            s.tick()
            continue
        except Exception as e:  # noqa: BLE001 -- never a traceback for one bad file
            s.error(DarknetError(f"cannot read the image ({type(e).__name__}: {e})", it.path))
            s.tick()
            continue
        pending.append((index, it, rgb))
        if len(pending) >= bs:
            flush()
    flush()
    s.close_bar()


def open_capture(it: InputItem):
    """``cv2.VideoCapture`` of a video file, a webcam index or a stream URL."""
    import cv2
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # we report unreadable videos ourselves
    return cv2.VideoCapture(int(it.path) if it.kind == "stream" and it.path.isdigit() else it.path)


def _process_video(s: _Session, index: int, it: InputItem):
    import cv2
    args, det = s.args, s.det
    cap = open_capture(it)
    if not cap.isOpened():
        cap.release()
        what = "the stream or camera" if it.kind == "stream" else \
            "the video (unsupported codec/container or corrupt file)"
        s.error(DarknetError(f"cannot open {what}", it.path))
        return
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if it.kind == "video" else 0
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not (fps > 0 and math.isfinite(fps)):
        fps = 25.0
    s.new_bar(total if total > 0 else None, os.path.basename(it.path), "frame")
    writer = out = None                               # the VideoWriter, writing to the atomic_path `out`
    out_path = s.out_path(it.rel or os.path.basename(it.path), force_ext=".mp4") if s.out_dir is not None else None
    bs = max(1, int(args.batch_size))
    frames, idx = [], 0
    got_any = False

    def flush():
        nonlocal writer, out
        if not frames:
            return
        try:
            results = det.run([f[1] for f in frames], labels=[it.path] * len(frames),
                              frames=[f[0] for f in frames])
        except Exception as e:  # noqa: BLE001
            if os.environ.get("DARKNET_PRN_DEBUG"):
                raise
            s.error(DarknetError(f"detection failed on frames {frames[0][0]}..{frames[-1][0]} "
                                 f"({type(e).__name__}: {e})", it.path))
            frames.clear()
            return
        for (fi, rgb), res in zip(frames, results):
            s.emit(index, res, out_path)
            if not args.no_save:
                bgr = draw_detections(np.ascontiguousarray(rgb[:, :, ::-1]), res.detections, det.classes)
                if writer is None and out is not False:   # False: no writer could be opened (reported once)
                    writer, out = _open_writer(s, out_path, fps, bgr.shape[1], bgr.shape[0])
                    out = out if writer is not None else False
                if writer is not None:
                    writer.write(bgr)
            s.tick()
        frames.clear()

    done = False
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            got_any = True
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            frames.append((idx, np.ascontiguousarray(frame[:, :, 2::-1])))
            idx += 1
            if len(frames) >= bs:
                flush()
        flush()
        done = True
    except KeyboardInterrupt:      # Ctrl-C ends a webcam/stream run: the video so far is kept
        done = True
        raise
    finally:
        cap.release()
        if writer is not None:
            writer.release()                          # the file is complete once closed: then renamed
            if not done:
                out.abort()
            else:
                try:
                    out.commit()
                    s.saved["videos"] += 1
                except DarknetError as e:
                    s.error(e)
        s.close_bar()
    if not got_any:
        s.error(DarknetError("the video has no readable frames", it.path))


def _open_writer(s: _Session, path: str, fps: float, w: int, h: int):
    import cv2
    base = os.path.splitext(path)[0]
    for ext, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        try:
            out = atomic_path(base + ext, "the annotated video", make_dirs=True)
        except DarknetError as e:
            s.error(e)
            return None, None
        wr = cv2.VideoWriter(out.tmp, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if wr.isOpened():
            return wr, out
        wr.release()
        out.abort()
    s.error(DarknetError("cannot create the annotated video (no usable OpenCV video writer)", path))
    return None, None


def run(args) -> int:
    """Run ``darknet-prn detect`` with parsed ``args``. Returns the exit status: 0, 1 when some inputs could not
    be processed (each reported on stderr as ``darknet-prn detect: error: FILE: reason``), 2 when nothing could
    run (bad cfg/weights/names/options). Under ``torchrun`` each rank takes every N-th input and rank 0 writes
    the merged JSON/COCO files in input order."""
    defaults = dict(thresh=0.25, nms=0.45, hier=0.5, letterbox=None, names=None, data=None, json=None, coco=None,
                    darknet_json=None, out=None, exist_ok=False, no_save=False, save_txt=False, save_conf=False,
                    classes=None, max_det=None, batch_size=1, device="cpu", backend="torch", threads=None,
                    width=None, height=None, partial=False, no_progress=False, quiet=False, precision="f32")
    for k, v in defaults.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    try:
        check_options(args)
        det = Detector(args.cfg, args.weights, names=args.names, data=args.data, thresh=args.thresh, nms=args.nms,
                       letterbox=args.letterbox, device=args.device, hier=args.hier, width=args.width,
                       height=args.height, partial=args.partial, backend=args.backend, threads=args.threads,
                       classes=args.classes, max_det=args.max_det, precision=args.precision)
    except DarknetError as e:
        print(f"darknet-prn detect: error: {e}", file=sys.stderr, flush=True)
        return 2
    from . import distributed
    world = distributed.init()
    try:
        if det.numeric_names and world.main and not args.quiet:
            print(f"warning: no class names for the model's {det.classes} classes, labels are class numbers (give "
                  f"--names FILE or --data FILE)", file=sys.stderr, flush=True)
        s = _Session(args, det, world)
        items = world.shard(discover_inputs(args.inputs))
        group = []
        interrupted = False
        try:
            for index, it in items + [(None, None)]:
                if it is not None and it.kind == "image":
                    group.append((index, it))
                    continue
                if group:
                    _process_images(s, group)
                    group = []
                if it is None:
                    break
                if it.kind == "error":
                    s.error(DarknetError(it.error, it.path))
                else:
                    _process_video(s, index, it)
        except KeyboardInterrupt:      # Ctrl-C ends a webcam/stream run: keep what was detected
            interrupted = True
        finally:
            s.close_bar()
        status = s.finish()
        if interrupted:
            print("interrupted", file=sys.stderr, flush=True)
            return 130
        return status
    finally:
        world.close()


run_detect = run
