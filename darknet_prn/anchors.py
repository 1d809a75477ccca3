"""``darknet-prn calc-anchors``: Darknet's ``detector calc_anchors`` (``detector.c`` ``calc_anchors``,
``matrix.c`` ``do_kmeans``), seeded.

The label sizes of the ``train=`` list in network pixels (``w * width``, ``h * height``, float32) are
clustered by k-means with distance ``1 - IoU`` (boxes and centroids centred at the same point): centroids
start at ``N`` distinct labels drawn by a Fisher-Yates shuffle (Darknet's ``random_centers``; Darknet seeds it
with the time, we with ``--seed``), then assignment / mean steps until no assignment changes (at most 1000);
a centroid component that becomes 0 keeps its old value. Anchors are sorted by area; the mean IoU printed is
each label against its best anchor, float32 as Darknet sums it.
"""
from __future__ import annotations

import sys

import numpy as np

from .cfgedit import get_key, sections, set_key
from .dataset import DataConfig, read_dataset, read_list
from .errors import DarknetError
from .fileio import atomic_write, read_cfg_file_text

F32 = np.float32


def _dist(data: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """matrix.c ``dist`` of every box against every centre -> (n, k) float32."""
    x0, x1 = data[:, 0:1], data[:, 1:2]
    y0, y1 = centers[None, :, 0], centers[None, :, 1]
    inter = np.minimum(x0, y0) * np.minimum(x1, y1)
    un = (x0 * x1 + y0 * y1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return (F32(1) - inter / un).astype(F32)


def kmeans(data: np.ndarray, k: int, seed: int | None = 0, init: np.ndarray | None = None):
    """``do_kmeans``: -> (centers (k, 2) float32 unsorted, iterations). ``init``: starting centres (else ``k``
    labels drawn with ``seed``)."""
    data = np.asarray(data, F32).reshape(-1, 2)
    n = len(data)
    if init is not None:
        centers = np.asarray(init, F32).reshape(-1, 2).copy()
    else:
        rng = np.random.default_rng(seed)
        s = np.arange(n)
        for i in range(n - 1, -1, -1):          # sample(): Fisher-Yates from the end
            j = int(rng.integers(0, i + 1))
            s[i], s[j] = s[j], s[i]
        centers = data[s[:k]].copy()
    assign = np.zeros(n, np.int64)

    def maximize():
        nonlocal centers
        old = centers.copy()
        sums = np.zeros_like(centers)
        np.add.at(sums, assign, data)           # float32, in data order
        counts = np.bincount(assign, minlength=len(centers))
        new = sums.copy()
        nz = counts > 0
        new[nz] = (sums[nz] / counts[nz, None].astype(F32)).astype(F32)
        centers = np.where(new == 0, old, new).astype(F32)

    if k == 1:
        maximize()
    it = 0
    while it < 1000:
        closest = np.argmin(_dist(data, centers), axis=1)
        converged = bool(np.all(closest == assign))
        assign = closest
        if converged:
            break
        maximize()
        it += 1
    return centers, it


def sort_by_area(centers: np.ndarray) -> np.ndarray:
    c = np.asarray(centers, F32).reshape(-1, 2)
    return c[np.argsort(c[:, 0] * c[:, 1], kind="stable")]


def mean_iou(data: np.ndarray, anchors: np.ndarray) -> float:
    """The ``avg IoU`` Darknet prints (percent): every box against its closest anchor, float32 sums."""
    data = np.asarray(data, F32).reshape(-1, 2)
    anchors = np.asarray(anchors, F32).reshape(-1, 2)
    if not len(data):
        return float("nan")
    best = np.argmin(_dist(data, anchors), axis=1)
    # Darknet recomputes the IoU of the closest anchor and skips values outside [0, 1]
    a = anchors[best]
    inter = np.minimum(data[:, 0], a[:, 0]) * np.minimum(data[:, 1], a[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (inter / ((data[:, 0] * data[:, 1] + a[:, 0] * a[:, 1]) - inter)).astype(F32)
    total = F32(0)
    for v in iou:
        if 0 <= v <= 1:
            total = F32(total + v)
    return float(F32(F32(100) * total) / F32(len(data)))


def format_anchors(anchors: np.ndarray, width: int) -> str:
    """Darknet's ``anchors = `` text: ``%3.0f,%3.0f`` pairs (``%2.4f`` when width <= 32) joined by ``, ``."""
    fmt = "{:3.0f},{:3.0f}" if width > 32 else "{:2.4f},{:2.4f}"
    return ", ".join(fmt.format(float(w), float(h)) for w, h in np.asarray(anchors, np.float64).reshape(-1, 2))


def label_sizes(data_path, width: int, height: int):
    """``(sizes (n, 2) float32 in network pixels, counts per class, number of images)`` of ``train=``."""
    dc = DataConfig.read(data_path)
    images = read_list(dc.train)
    labels, _ = read_dataset(images, classes=None)
    lab = np.concatenate(labels) if labels else np.zeros((0, 5), F32)
    classes = dc.classes or 1
    counts = np.bincount(lab[:, 0].astype(np.int64), minlength=classes) if len(lab) else np.zeros(classes, int)
    sizes = np.stack([lab[:, 3] * F32(width), lab[:, 4] * F32(height)], 1).astype(F32)
    return sizes, counts, len(images)


# ---------------------------------------------------------------------------------------------------------------
# writing them into a cfg

def masks_for(n_anchors: int, n_heads: int) -> list:
    """Darknet's layout: the first head takes the largest anchors, the last the smallest (yolov3: 6,7,8 / 3,4,5
    / 0,1,2); ``n_anchors`` split as evenly as possible."""
    base, extra = divmod(n_anchors, n_heads)
    sizes = [base + (1 if i < extra else 0) for i in range(n_heads)]   # ascending groups, smallest first
    groups, k = [], 0
    for s in sizes:
        groups.append(list(range(k, k + s)))
        k += s
    return groups[::-1]


def write_cfg(cfg_in, cfg_out, anchors: np.ndarray, width: int) -> list:
    """Copy ``cfg_in`` to ``cfg_out`` with ``anchors``/``num`` in every ``[yolo]``/``[Gaussian_yolo]`` section,
    masks laid out by :func:`masks_for` and ``filters=`` of the
    convolution before each head set to ``len(mask) * (classes + 5)`` (``+ 9`` for Gaussian_yolo). Masks are kept
    when ``num`` does not change and they index the new anchors. Returns notes for the user."""
    lines = read_cfg_file_text(cfg_in).split("\n")
    secs = sections(lines)
    heads = [k for k, s in enumerate(secs) if s[0] in ("yolo", "Gaussian_yolo")]
    if not heads:
        raise DarknetError("no [yolo] or [Gaussian_yolo] section to write anchors into", cfg_in)
    n = len(anchors)
    text = ",".join(f"{int(round(float(v)))}" if width > 32 else f"{float(v):.4f}" for v in np.ravel(anchors))
    old_masks = []
    for k in heads:
        m = get_key(lines, secs[k][1], secs[k][2], "mask")
        try:
            old_masks.append([int(v) for v in m.split(",") if v.strip()] if m else None)
        except ValueError:
            old_masks.append(None)
    old_num = get_key(lines, secs[heads[0]][1], secs[heads[0]][2], "num")
    keep = old_num == str(n) and all(m and all(0 <= v < n for v in m) for m in old_masks)
    masks = old_masks if keep else masks_for(n, len(heads))
    notes = [] if keep else [f"masks laid out for {n} anchors over {len(heads)} heads: "
                             + " / ".join(",".join(map(str, m)) for m in masks)]
    for h, k in reversed(list(enumerate(heads))):      # bottom-up: inserted lines do not move earlier sections
        start, end = secs[k][1], secs[k][2]
        classes = int(get_key(lines, start, end, "classes", "20"))
        add = set_key(lines, start, end, "anchors", text)
        add += set_key(lines, start, end + add, "num", str(n))
        set_key(lines, start, end + add, "mask", ",".join(map(str, masks[h])))
        prev = k - 1
        if prev >= 0 and secs[prev][0] in ("convolutional", "conv"):
            per = classes + (9 if secs[k][0] == "Gaussian_yolo" else 5)
            set_key(lines, secs[prev][1], secs[prev][2], "filters", str(len(masks[h]) * per))
        else:
            notes.append(f"the section before head {h} is not [convolutional]: its filters= left as it is")
    out = "\n".join(lines)
    atomic_write(cfg_out, lambda f: f.write(out.encode("utf-8", errors="surrogateescape")), "cfg")
    return notes


# ---------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser):
    parser.add_argument("data", help="Darknet .data file (its train= list is used, as Darknet does)")
    parser.add_argument("-n", "--num-of-clusters", dest="n", type=int, required=True, help="number of anchors")
    parser.add_argument("--width", type=int, required=True, help="network width")
    parser.add_argument("--height", type=int, required=True, help="network height")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the initial centroids (default 0)")
    parser.add_argument("--cfg", metavar="IN", help="write the anchors into this cfg's [yolo] sections ...")
    parser.add_argument("-o", "--out", metavar="OUT", help="... saved as OUT (with --cfg)")


def run(args) -> int:
    if args.n < 1:
        raise DarknetError(f"-n {args.n}: need at least one cluster")
    if args.width <= 0 or args.height <= 0:
        raise DarknetError("--width and --height must be positive (the network input size)")
    if bool(args.cfg) != bool(args.out):
        raise DarknetError("--cfg IN and -o OUT go together")
    print(f"\n num_of_clusters = {args.n}, width = {args.width}, height = {args.height} ")
    sizes, counts, n_images = label_sizes(args.data, args.width, args.height)
    print(f" read labels from {n_images} images ")
    print(f" loaded {len(sizes)} boxes")
    if len(sizes) < args.n:
        raise DarknetError(f"{len(sizes)} labelled boxes, fewer than the {args.n} clusters asked for", args.data)
    bad = int(np.count_nonzero((sizes <= 0).any(axis=1)))
    if bad:
        print(f"darknet-prn calc-anchors: warning: {bad} boxes with zero or negative size", file=sys.stderr)
    centers, it = kmeans(sizes, args.n, seed=args.seed)
    anchors = sort_by_area(centers)
    print(f"\n iterations = {it} \n")
    print("counters_per_class = " + ", ".join(str(int(c)) for c in counts))
    print(f"\n avg IoU = {mean_iou(sizes, anchors):2.2f} % \n")
    print("anchors = " + format_anchors(anchors, args.width))
    if args.cfg:
        for note in write_cfg(args.cfg, args.out, anchors, args.width):
            print(f"darknet-prn calc-anchors: {note}", file=sys.stderr)
        print(f"darknet-prn calc-anchors: wrote {args.out}", file=sys.stderr)
    return 0
