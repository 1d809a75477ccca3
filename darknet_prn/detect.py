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
from .errors import DarknetError
from .fileio import read_input

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".ts", ".mts", ".m2ts", ".ogv", ".asf", ".vob")
_WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_GLOB_CHARS = set("*?[")



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


def _resolve_device(device):
    import torch
    dev = torch.device(device if device is not None else "cpu")
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
    engine: ``torch`` (default fast path), ``exact``, ``onnxruntime``, ``openvino``; see docs/performance.md) and
    ``threads`` (intra-op threads).
    """

    def __init__(self, cfg, weights=None, names=None, thresh: float = 0.25, nms: float = 0.45, letterbox=None,
                 device="cpu", data=None, hier: float = 0.5, width=None, height=None, partial: bool = False,
                 backend: str = "torch", threads=None):
        import torch
        from .model import Darknet
        self.device = _resolve_device(device)
        self.net = Darknet.from_cfg(cfg, width=width, height=height)
        if weights is not None:
            self.net.load_weights(weights, partial=partial)
        self.net.eval()
        self.net.set_backend(backend, threads=threads)
        self.net.to(self.device)
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
        return dets, post.darknet_order(dets, im_w, im_h, self.thresh, self.names)

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

    def detect(self, image, rgb: bool = False, batch_size: int = 8):
        """Detect objects. ``image``: a path, a numpy ``(H, W, 3)`` uint8 array (**BGR** as OpenCV gives it;
        pass ``rgb=True`` for RGB), or a list/tuple of those (a batch). Returns a list of detection dicts for
        one image and a list of such lists for a batch. Raises :class:`DarknetError` for unreadable images."""
        single = not isinstance(image, (list, tuple))
        items = [image] if single else list(image)
        out = []
        for s in range(0, len(items), max(1, int(batch_size))):
            chunk = [self.load(it, rgb) for it in items[s:s + max(1, int(batch_size))]]
            out.extend(r.detections for r in self.run(chunk))
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


def draw_detections(bgr: np.ndarray, detections: list, classes: int) -> np.ndarray:
    """Boxes and labels (one colour per class, OpenCV drawing) on a copy of a BGR uint8 image."""
    import cv2
    img = bgr.copy()
    h, w = img.shape[:2]
    thick = max(1, int(round(min(h, w) * 0.004)))
    scale = max(0.35, min(h, w) / 900.0)
    font = cv2.FONT_HERSHEY_SIMPLEX
    groups = {}
    for d in detections:      # one box per detection: group the classes sharing a box
        key = tuple(round(v, 3) for v in d["bbox"])
        groups.setdefault(key, []).append(d)
    for key, ds in groups.items():
        left, top, bw, bh = ds[0]["bbox"]
        x0 = int(np.clip(round(left), 0, w - 1))
        y0 = int(np.clip(round(top), 0, h - 1))
        x1 = int(np.clip(round(left + bw), 0, w - 1))
        y1 = int(np.clip(round(top + bh), 0, h - 1))
        color = class_color(ds[0]["class_id"], classes)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thick)
        label = ", ".join(f"{d['name']} {d['confidence'] * 100:.0f}%" for d in ds)
        (tw, th), base = cv2.getTextSize(label, font, scale, max(1, thick // 2))
        ty = y0 - th - base - 2 if y0 - th - base - 2 >= 0 else min(y0 + thick, h - th - base - 2)
        ty = max(ty, 0)
        cv2.rectangle(img, (x0, ty), (min(x0 + tw + 4, w - 1), ty + th + base + 2), color, -1)
        cv2.putText(img, label, (x0 + 2, ty + th + 1), font, scale, (0, 0, 0), max(1, thick // 2), cv2.LINE_AA)
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
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(buf.tobytes())
    except OSError as e:
        raise DarknetError(f"cannot write: {e.strerror or e}", path) from None


# ---------------------------------------------------------------------------------------------------------------
# progress bar (stderr, no dependency)


class Progress:
    """A small stderr progress bar. On a terminal it redraws one line; otherwise it prints a line at most
    every 10 % (and at the end) so that logs stay readable."""

    def __init__(self, total, desc: str = "", stream=None, enabled: bool = True, unit: str = "img"):
        self.total = int(total) if total else None
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.n = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._last_pct = -1
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = False

    def _text(self) -> str:
        el = time.perf_counter() - self.t0
        rate = self.n / el if el > 0 else 0.0
        if self.total:
            frac = min(self.n / self.total, 1.0)
            width = 24
            fill = int(frac * width)
            bar = "#" * fill + "-" * (width - fill)
            return f"{self.desc} [{bar}] {self.n}/{self.total} {frac * 100:3.0f}% {rate:.1f} {self.unit}/s"
        return f"{self.desc} {self.n} {self.unit} {rate:.1f} {self.unit}/s"

    def update(self, k: int = 1):
        self.n += k
        if not self.enabled:
            return
        now = time.perf_counter()
        done = self.total is not None and self.n >= self.total
        if self.tty:
            if done or now - self._last >= 0.1:
                self.stream.write("\r" + self._text() + "\033[K")
                self.stream.flush()
                self._last = now
                self._shown = True
        else:
            pct = int(self.n * 10 / self.total) if self.total else None
            if (pct is not None and pct != self._last_pct) or (pct is None and now - self._last >= 5.0):
                if not done:
                    self.stream.write(self._text() + "\n")
                    self.stream.flush()
                self._last_pct = pct
                self._last = now

    def clear(self):
        """Erase the bar (before other terminal output); it is redrawn on the next update."""
        if self.enabled and self.tty and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def close(self):
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self._text() + "\033[K\n")
        else:
            self.stream.write(self._text() + "\n")
        self.stream.flush()
        self.enabled = False


# ---------------------------------------------------------------------------------------------------------------
# inputs


@dataclass
class InputItem:
    kind: str            # "image" | "video" | "error"
    path: str            # as printed
    rel: str = ""        # path under --out
    error: str = ""
    from_dir: bool = False


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in pre.IMAGE_EXTENSIONS


def _walk_images(root: str) -> list:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for fn in sorted(filenames):
            if _is_image_name(fn) and not fn.startswith("."):
                found.append(os.path.join(dirpath, fn))
    return found


def discover_inputs(args_inputs) -> list:
    """Expand files, directories (recursively, image extensions), glob patterns and videos into
    :class:`InputItem`s in order; problems become ``kind="error"`` items (reported, then skipped)."""
    items = []
    for raw in args_inputs:
        arg = os.fspath(raw)
        if os.path.isdir(arg):
            imgs = _walk_images(arg)
            if not imgs:
                items.append(InputItem("error", arg, error="directory contains no images (looked for "
                                                          + ", ".join(pre.IMAGE_EXTENSIONS[:6]) + ", ...)"))
            for p in imgs:
                items.append(InputItem("image", p, os.path.relpath(p, arg), from_dir=True))
        elif os.path.exists(arg):
            items.append(InputItem("video" if _is_video(arg) else "image", arg, os.path.basename(arg)))
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
                items.append(InputItem("video" if _is_video(p) else "image", p, rel, from_dir=True))
        else:
            items.append(InputItem("error", arg, error="no such file or directory"))
    return items


# ---------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser):
    """Register ``detect``'s arguments on an argparse (sub)parser."""
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="images, directories (searched recursively), glob patterns or video files")
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
    parser.add_argument("--json", metavar="FILE", help="write detections as JSON to FILE ('-' for stdout)")
    parser.add_argument("--coco", metavar="FILE", help="write detections in COCO results format to FILE")
    parser.add_argument("--out", metavar="DIR", default=os.path.join("runs", "detect"),
                        help="folder for annotated images and videos (default runs/detect/)")
    parser.add_argument("--no-save", action="store_true", help="do not write annotated images/videos")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--backend", default="torch", choices=("torch", "exact", "onnxruntime", "openvino"),
                        help="inference engine (default torch: the fast path; see docs/performance.md)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's default)")
    parser.add_argument("--width", type=int, help="override the cfg's [net] width")
    parser.add_argument("--height", type=int, help="override the cfg's [net] height")
    parser.add_argument("--partial", action="store_true",
                        help="load a .weights file that does not fit the cfg as far as it goes (with a warning)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on directories and videos")
    parser.add_argument("--quiet", "-q", action="store_true", help="no Darknet-style text on stdout")


add_detect_arguments = add_arguments


class _Session:
    """State of one ``detect`` run: writers, output names, error count."""

    def __init__(self, args, det: Detector):
        self.args = args
        self.det = det
        self.errors = 0
        self.json_rows = []
        self.coco_rows = []
        self.used_out = set()
        self.text = not args.quiet and args.json != "-"
        self.bar = None

    def error(self, err):
        self.errors += 1
        if self.bar is not None:
            self.bar.clear()
        msg = str(err) if isinstance(err, DarknetError) else f"{type(err).__name__}: {err}"
        print(f"darknet-prn detect: error: {msg}", file=sys.stderr, flush=True)

    def out_path(self, rel: str, force_ext: str | None = None) -> str:
        base, ext = os.path.splitext(rel)
        if force_ext:
            ext = force_ext
        elif ext.lower() not in _WRITABLE:
            ext = ".jpg"
        cand = os.path.join(self.args.out, base + ext)
        k = 1
        while cand in self.used_out:
            cand = os.path.join(self.args.out, f"{base}_{k}{ext}")
            k += 1
        self.used_out.add(cand)
        return cand

    def emit(self, res: ImageResult):
        if self.text:
            if self.bar is not None:
                self.bar.clear()
            sys.stdout.write("\n".join(res.darknet_lines()) + "\n")
            sys.stdout.flush()
        if self.args.json:
            self.json_rows.append(res.to_json())
        if self.args.coco:
            self.coco_rows.extend(coco_rows(res, self.det.classes))


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


def _write_json(path: str, obj, what: str):
    text = json.dumps(obj, indent=1)
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    try:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        tmp = path + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise DarknetError(f"cannot write the {what} file: {e.strerror or e}", path) from None


def _process_images(s: _Session, items: list):
    args, det = s.args, s.det
    bs = max(1, int(args.batch_size))
    show_bar = not args.no_progress and any(it.from_dir for it in items) and len(items) > 1
    s.bar = Progress(len(items), "detect", enabled=show_bar)
    pending = []

    def flush():
        if not pending:
            return
        try:
            results = det.run([p[1] for p in pending], labels=[p[0].path for p in pending])
        except Exception as e:  # noqa: BLE001 -- report, keep going with the next batch
            if os.environ.get("DARKNET_PRN_DEBUG"):
                raise
            for it, _ in pending:
                s.error(e if isinstance(e, DarknetError) else
                        DarknetError(f"detection failed ({type(e).__name__}: {e})", it.path))
                s.bar.update()
            pending.clear()
            return
        for (it, rgb), res in zip(pending, results):
            s.emit(res)
            if not args.no_save:
                try:
                    out = s.out_path(it.rel or os.path.basename(it.path))
                    write_image(out, draw_detections(np.ascontiguousarray(rgb[:, :, ::-1]), res.detections,
                                                     det.classes))
                except DarknetError as e:
                    s.error(e)
            s.bar.update()
        pending.clear()

    for it in items:
        try:
            rgb = pre.read_image(it.path)
        except DarknetError as e:
            s.error(e)
            s.bar.update()
            continue
        except Exception as e:  # noqa: BLE001 -- never a traceback for one bad file
            s.error(DarknetError(f"cannot read the image ({type(e).__name__}: {e})", it.path))
            s.bar.update()
            continue
        pending.append((it, rgb))
        if len(pending) >= bs:
            flush()
    flush()
    s.bar.close()
    s.bar = None


def _process_video(s: _Session, it: InputItem):
    import cv2
    args, det = s.args, s.det
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # we report unreadable videos ourselves
    cap = cv2.VideoCapture(it.path)
    if not cap.isOpened():
        cap.release()
        s.error(DarknetError("cannot open the video (unsupported codec/container or corrupt file)", it.path))
        return
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not (fps > 0 and math.isfinite(fps)):
        fps = 25.0
    s.bar = Progress(total if total > 0 else None, os.path.basename(it.path), enabled=not args.no_progress,
                     unit="frame")
    writer = None
    out_path = None
    bs = max(1, int(args.batch_size))
    frames, idx = [], 0
    got_any = False

    def flush():
        nonlocal writer, out_path
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
            s.emit(res)
            if not args.no_save:
                bgr = draw_detections(np.ascontiguousarray(rgb[:, :, ::-1]), res.detections, det.classes)
                if writer is None:
                    writer, out_path = _open_writer(s, it, fps, bgr.shape[1], bgr.shape[0])
                if writer is not None:
                    writer.write(bgr)
            s.bar.update()
        frames.clear()

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
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        s.bar.close()
        s.bar = None
    if not got_any:
        s.error(DarknetError("the video has no readable frames", it.path))


def _open_writer(s: _Session, it: InputItem, fps: float, w: int, h: int):
    import cv2
    base = it.rel or os.path.basename(it.path)
    for ext, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        path = s.out_path(base, force_ext=ext)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if wr.isOpened():
            return wr, path
        wr.release()
    s.error(DarknetError("cannot create the annotated video (no usable OpenCV video writer)",
                         os.path.join(s.args.out, base)))
    return None, None


def run(args) -> int:
    """Run ``darknet-prn detect`` with parsed ``args``. Returns the exit status: 0, 1 when some inputs could not
    be processed (each reported on stderr as ``darknet-prn detect: error: FILE: reason``), 2 when nothing could
    run (bad cfg/weights/names/options)."""
    defaults = dict(thresh=0.25, nms=0.45, hier=0.5, letterbox=None, names=None, data=None, json=None, coco=None,
                    out=os.path.join("runs", "detect"), no_save=False, batch_size=1, device="cpu",
                    no_progress=False, quiet=False)
    for k, v in defaults.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    try:
        if args.batch_size < 1:
            raise DarknetError(f"--batch-size {args.batch_size}: must be at least 1")
        if args.names and args.data:
            raise DarknetError("give either --names or --data, not both")
        det = Detector(args.cfg, args.weights, names=args.names, data=args.data, thresh=args.thresh, nms=args.nms,
                       letterbox=args.letterbox, device=args.device, hier=args.hier, width=args.width,
                       height=args.height, partial=args.partial, backend=args.backend, threads=args.threads)
    except DarknetError as e:
        print(f"darknet-prn detect: error: {e}", file=sys.stderr, flush=True)
        return 2
    s = _Session(args, det)
    items = discover_inputs(args.inputs)
    group = []
    try:
        for it in items + [None]:
            if it is not None and it.kind == "image":
                group.append(it)
                continue
            if group:
                _process_images(s, group)
                group = []
            if it is None:
                break
            if it.kind == "error":
                s.error(DarknetError(it.error, it.path))
            elif it.kind == "video":
                _process_video(s, it)
    finally:
        try:
            if args.json:
                _write_json(args.json, s.json_rows, "JSON")
            if args.coco:
                _write_json(args.coco, s.coco_rows, "COCO")
                if args.thresh > 0.005:
                    print(f"darknet-prn detect: note: COCO mAP needs low-confidence detections too: use --thresh "
                          f"0.005, or `darknet-prn valid` (Darknet's 0.001, NMS 0.6)", file=sys.stderr)
        except DarknetError as e:
            s.error(e)
    return 1 if s.errors else 0


run_detect = run
