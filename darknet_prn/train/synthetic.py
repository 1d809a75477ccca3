"""A small deterministic synthetic detection dataset in Darknet's format, for tests, benchmarks and
demonstrations: filled shapes of a few classes on textured backgrounds, several objects per image.

Layout written under ``OUT_DIR``: ``JPEGImages/NNNNN.jpg``, ``labels/NNNNN.txt`` (Pascal VOC's layout, which
AlexeyAB's ``replace_image_to_label`` maps: it no longer maps ``images/`` to ``labels/``) (Darknet's ``class x y w h``,
relative centre and size), ``train.txt`` / ``valid.txt`` (absolute image paths, one a line), ``obj.names``,
``obj.data`` (``classes``, ``train``, ``valid``, ``names``, ``backup``). Same arguments -> same bytes."""
from __future__ import annotations

import os

import numpy as np

from ..errors import DarknetError
from ..fileio import atomic_write

SHAPES = ("circle", "rectangle", "triangle", "cross", "ring")


def _cv2():
    import cv2
    return cv2


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured BGR uint8 background: smooth colour noise, a gradient and random thin lines."""
    cv2 = _cv2()
    g = int(rng.integers(3, 7))
    coarse = rng.uniform(40, 215, (g, g, 3)).astype(np.float32)
    img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 12, (size, size, 3)).astype(np.float32)
    yy = np.linspace(-1, 1, size, dtype=np.float32)[:, None, None]
    img = img + fine + 25 * yy * rng.uniform(-1, 1, 3).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, col, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _draw_shape(img: np.ndarray, kind: str, cx: float, cy: float, r: float, color, rng) -> tuple:
    """Draws one shape; returns its tight pixel box (x0, y0, x1, y1), inclusive-exclusive."""
    cv2 = _cv2()
    mask = np.zeros(img.shape[:2], np.uint8)
    c = (int(round(cx)), int(round(cy)))
    ri = max(2, int(round(r)))
    if kind == "circle":
        cv2.circle(mask, c, ri, 255, -1)
    elif kind == "rectangle":
        a = rng.uniform(0.5, 1.0)
        w, h = (ri, int(ri * a)) if rng.random() < 0.5 else (int(ri * a), ri)
        cv2.rectangle(mask, (c[0] - w, c[1] - h), (c[0] + w, c[1] + h), 255, -1)
    elif kind == "triangle":
        ang = rng.uniform(0, 2 * np.pi)
        pts = [(cx + r * np.cos(ang + k * 2 * np.pi / 3), cy + r * np.sin(ang + k * 2 * np.pi / 3)) for k in range(3)]
        cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 255)
    elif kind == "cross":
        t = max(2, ri // 3)
        cv2.rectangle(mask, (c[0] - ri, c[1] - t), (c[0] + ri, c[1] + t), 255, -1)
        cv2.rectangle(mask, (c[0] - t, c[1] - ri), (c[0] + t, c[1] + ri), 255, -1)
    else:  # ring
        cv2.circle(mask, c, ri, 255, max(2, ri // 3))
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    img[mask > 0] = color
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def make_image(rng: np.random.Generator, size: int, classes: int, min_objects: int = 2, max_objects: int = 6):
    """One BGR image and its labels [(class, x, y, w, h)] (relative, Darknet's convention)."""
    img = _background(rng, size)
    boxes, labels = [], []
    want = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(want * 6):
        if len(boxes) == want:
            break
        r = rng.uniform(0.06, 0.2) * size
        cx, cy = rng.uniform(r, size - r, 2)
        est = (cx - r, cy - r, cx + r, cy + r)
        if any(_iou(est, b) > 0 for b in boxes):  # no occlusion: every label is fully visible
            continue
        cls = int(rng.integers(0, classes))
        # a colour far from the local background so the object is visible
        bg = img[int(cy), int(cx)].astype(int)
        color = np.array([(v + 128 + int(rng.integers(-40, 41))) % 256 for v in bg], np.uint8)
        box = _draw_shape(img, SHAPES[cls], cx, cy, r, color, rng)
        if box is None or box[2] - box[0] < 3 or box[3] - box[1] < 3:
            continue
        boxes.append(box)
        x0, y0, x1, y1 = box
        labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
    return img, labels


def _write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()), "file")


def generate(out_dir, n: int = 300, classes: int = 3, size: int = 224, seed: int = 0,
             valid_fraction: float = 0.2, quality: int = 92) -> str:
    """Writes the dataset; returns the path of its ``obj.data``."""
    cv2 = _cv2()
    if not 1 <= classes <= len(SHAPES):
        raise DarknetError(f"--classes must be 1..{len(SHAPES)} (shapes: {', '.join(SHAPES)}), got {classes}")
    if n < 2:
        raise DarknetError(f"-n must be at least 2 (one training and one validation image), got {n}")
    if size < 32:
        raise DarknetError(f"--size must be at least 32, got {size}")
    out = os.path.abspath(os.fspath(out_dir))
    for sub in ("JPEGImages", "labels", "backup"):
        try:
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        except OSError as e:
            raise DarknetError(f"{os.path.join(out, sub)}: cannot create directory: {e.strerror or e}") from None
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img, labels = make_image(rng, size, classes)
        name = f"{i:05d}"
        ip = os.path.join(out, "JPEGImages", name + ".jpg")
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        atomic_write(ip, lambda f, b=buf: f.write(b.tobytes()), "image")
        _write_text(os.path.join(out, "labels", name + ".txt"),
                    "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels))
        paths.append(ip)
    n_valid = max(1, int(round(n * valid_fraction)))
    _write_text(os.path.join(out, "train.txt"), "".join(p + "\n" for p in paths[:-n_valid]))
    _write_text(os.path.join(out, "valid.txt"), "".join(p + "\n" for p in paths[-n_valid:]))
    _write_text(os.path.join(out, "obj.names"), "".join(s + "\n" for s in SHAPES[:classes]))
    data = os.path.join(out, "obj.data")
    _write_text(data, f"classes = {classes}\ntrain = {out}/train.txt\nvalid = {out}/valid.txt\n"
                      f"names = {out}/obj.names\nbackup = {out}/backup\n")
    return data


def add_arguments(parser):
    parser.add_argument("out_dir", help="output directory (JPEGImages/, labels/, train.txt, valid.txt, obj.data)")
    parser.add_argument("-n", type=int, default=300, help="number of images (default 300)")
    parser.add_argument("--classes", type=int, default=3, help=f"number of classes, 1..{len(SHAPES)} (default 3)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="share of images in valid.txt (default 0.2)")


def run(args) -> int:
    data = generate(args.out_dir, n=args.n, classes=args.classes, size=args.size, seed=args.seed,
                    valid_fraction=args.valid_fraction)
    print(f"wrote {args.n} images with labels; data file: {data}")
    return 0
