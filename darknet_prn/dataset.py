"""Darknet datasets: the ``.data`` file, image list files, the image -> label path rule and label files.

Torch-free. Every rule here is Darknet's (AlexeyAB ``option_list.c`` ``read_data_cfg``, ``data.c``
``get_paths``/``read_boxes``, ``utils.c`` ``replace_image_to_label``/``find_replace``/``trim``):

* ``.data``: every space and tab of a line is removed, lines starting with ``#`` or ``;`` are comments,
  ``key=value`` splits at the first ``=``, the first occurrence of a key wins, an inline ``#`` is part of the
  value (as in Darknet).
* Relative paths (in the ``.data`` file and in list files) are resolved as Darknet resolves them: from the
  current directory. Where that file does not exist we also look beside the file that names it and in that
  folder's parent (so ``cfg/coco.data`` naming ``data/coco.names`` works from anywhere); the first existing
  candidate wins, else the Darknet path is kept (and reported by whoever opens it).
* Label files: ``class x y w h`` per line (relative centre and size). Darknet's ``fscanf`` loop stops silently
  at the first malformed token and indexes arrays with any class id; we reject such files with a one-line
  ``file:line`` error instead (wrong field count, non-numbers, non-integer or out-of-range class ids,
  non-finite values). Coordinates outside ``(0, 1]`` are *kept as written*, with one warning per file:
  Darknet's ``detector map`` and ``calc_anchors`` use them unchanged (so our numbers stay Darknet's), and its
  training (``fill_truth_detection``) drops boxes whose ``x``/``y`` is outside ``(0, 1]`` and clips ``w``/``h``
  to 1 -- :func:`train_filter` applies that rule.
* A missing label file means an image without objects (Darknet: "Can't open label file"); :func:`read_dataset`
  counts them and says so in one warning line.

API::

    from darknet_prn.dataset import DataConfig, read_list, label_path, read_labels
    cfg = DataConfig.read("coco.data")           # cfg.classes, cfg.valid, cfg.names, cfg.get("eval")
    images = read_list(cfg.valid)                # resolved image paths
    label_path("VOC/JPEGImages/a.jpg")           # -> "VOC/labels/a.txt"
    read_labels("a.txt", classes=80)             # -> float32 (n, 5): class, x, y, w, h
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import DarknetError
from .fileio import read_input

__all__ = ["DataConfig", "LabelWarning", "resolve_path", "read_list", "label_path", "read_labels",
           "read_dataset", "train_filter", "names_from_data", "IMAGE_TO_LABEL_DIRS", "IMAGE_TO_LABEL_EXTS"]


class LabelWarning(UserWarning):
    """A label problem Darknet tolerates (coordinates outside (0, 1], missing label files)."""


# ---------------------------------------------------------------------------------------------------------------
# paths


def resolve_path(value: str, ref=None) -> str:
    """``value`` as Darknet opens it (relative to the current directory); if that does not exist and ``ref`` (the
    file naming it) is given, ``value`` beside ``ref`` or in the parent of ``ref``'s folder, whichever exists
    first. Returns the Darknet path when none exists."""
    value = os.fspath(value)
    if os.path.isabs(value) or os.path.exists(value) or ref is None:
        return value
    base = os.path.dirname(os.path.abspath(os.fspath(ref)))
    for cand in (os.path.join(base, value), os.path.join(os.path.dirname(base), value)):
        if os.path.exists(cand):
            return cand
    return value


# ---------------------------------------------------------------------------------------------------------------
# the .data file


@dataclass
class DataConfig:
    """A Darknet ``.data`` file. ``options`` maps each key (first occurrence) to ``(value, line)``."""
    path: str
    options: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path) -> "DataConfig":
        """Parse ``path`` with Darknet's ``read_data_cfg`` syntax; a missing/unreadable file or a line Darknet
        rejects (``key=`` with nothing after the ``=``) is a one-line :class:`DarknetError`."""
        p = os.fspath(path)
        raw = read_input(p, DarknetError, "data file", "a data file", "data file")
        if b"\x00" in raw[:4096]:
            raise DarknetError("not a text .data file (binary data)", p)
        options = {}
        for lineno, line in enumerate(raw.decode("utf-8", errors="surrogateescape").splitlines(), 1):
            s = line.replace(" ", "").replace("\t", "").replace("\r", "").replace("\n", "")
            if not s or s[0] in "#;":
                continue
            key, eq, val = s.partition("=")
            if not eq:
                # Darknet stores the key with no value: never found by option_find
                continue
            if not val:
                raise DarknetError(f"'{line.strip()}': no value after '='", p, lineno)
            options.setdefault(key, (val, lineno))
        return cls(p, options)

    def get(self, key: str, default=None):
        """The raw value of ``key`` (first occurrence), else ``default``."""
        v = self.options.get(key)
        return v[0] if v is not None else default

    def line(self, key: str):
        v = self.options.get(key)
        return v[1] if v is not None else None

    def get_int(self, key: str, default=None):
        """``key`` as an integer (Darknet's ``atoi``, a trailing ``#``/``;`` comment allowed)."""
        v = self.get(key)
        if v is None:
            return default
        num = v.split("#", 1)[0].split(";", 1)[0]
        try:
            return int(num)
        except ValueError:
            raise DarknetError(f"{key}={v}: not an integer", self.path, self.line(key)) from None

    def file(self, key: str, required: bool = True, what: str | None = None):
        """The path of ``key`` resolved (see :func:`resolve_path`), checked to be an existing file; ``None`` when
        the key is absent and not ``required``. One-line errors name the ``.data`` file and line."""
        v = self.get(key)
        if v is None:
            if not required:
                return None
            raise DarknetError(f"no {key}= line" + (f" (the {what})" if what else ""), self.path)
        p = resolve_path(v, self.path)
        if not os.path.isfile(p):
            where = "is a directory" if os.path.isdir(p) else "file not found"
            raise DarknetError(f"{key}={v}: {where} (looked in the current directory and beside the data file)",
                               self.path, self.line(key))
        return p

    @property
    def classes(self):
        """``classes=`` (None when absent)."""
        return self.get_int("classes")

    @property
    def train(self) -> str:
        return self.file("train", what="list of training images")

    @property
    def valid(self) -> str:
        return self.file("valid", what="list of validation images")

    @property
    def names(self) -> str:
        return self.file("names", what="class names file")

    @property
    def backup(self) -> str:
        """``backup=`` (Darknet's default ``backup/``), resolved from the current directory (a folder for
        output: not required to exist)."""
        return self.get("backup", "backup/")

    @property
    def eval(self) -> str:
        """``eval=`` (``voc`` by default, ``coco`` for COCO results)."""
        return self.get("eval", "voc")


def names_from_data(path) -> str:
    """The ``names=`` file of a Darknet ``.data`` file, resolved like Darknet (relative to the current
    directory), else relative to the ``.data`` file's folder or its parent (Darknet's ``cfg/coco.data``)."""
    return DataConfig.read(path).file("names")


# ---------------------------------------------------------------------------------------------------------------
# list files


def read_list(path, resolve: bool = True) -> list:
    """The image paths of a Darknet list file (``train=``/``valid=``): one per line, ``\\r\\n`` endings
    accepted; surrounding spaces and empty lines are skipped (Darknet would try to open them as images and
    fail). Relative paths are resolved with :func:`resolve_path` against the list file when ``resolve``."""
    p = os.fspath(path)
    raw = read_input(p, DarknetError, "list file", "a list file", "list file")
    if b"\x00" in raw[:4096]:
        raise DarknetError("not a text list file (binary data)", p)
    out = []
    for line in raw.decode("utf-8", errors="surrogateescape").splitlines():
        s = line.strip()
        if s:
            out.append(resolve_path(s, p) if resolve else s)
    return out


# ---------------------------------------------------------------------------------------------------------------
# image -> label path (utils.c replace_image_to_label)

IMAGE_TO_LABEL_DIRS = (
    ("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"), ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"), ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"), ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)
IMAGE_TO_LABEL_EXTS = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm", ".PPM",
                       ".tiff", ".TIFF")


def _find_replace(s: str, orig: str, rep: str) -> str:
    """utils.c ``find_replace``: the first occurrence only."""
    i = s.find(orig)
    return s if i < 0 else s[:i] + rep + s[i + len(orig):]


def _find_replace_extension(s: str, orig: str, rep: str) -> str:
    """utils.c ``find_replace_extension``: the last occurrence, only when it ends the string."""
    return s[:-len(orig)] + rep if s.endswith(orig) else s


def label_path(image_path) -> str:
    """Darknet's ``replace_image_to_label``: the folder swaps (first occurrence each, in Darknet's order), spaces
    and tabs trimmed at both ends, then the image extension (``.jpg .JPG .jpeg .JPEG .png .PNG .bmp .BMP .ppm
    .PPM .tiff .TIFF``) replaced by ``.txt``. Darknet goes on with a label path that does not end in ``.txt``
    (it prints "Failed to infer label file name" and reads the image as labels); that is an error here."""
    src = os.fspath(image_path)
    s = src
    for orig, rep in IMAGE_TO_LABEL_DIRS:
        s = _find_replace(s, orig, rep)
    s = s.strip(" \t")
    for ext in IMAGE_TO_LABEL_EXTS:
        s = _find_replace_extension(s, ext, ".txt")
    if len(s) <= 4 or not s.endswith(".txt"):
        raise DarknetError("cannot infer the label file name (Darknet knows the image extensions "
                           + " ".join(IMAGE_TO_LABEL_EXTS[::2]) + " and their upper case)", src)
    return s


# ---------------------------------------------------------------------------------------------------------------
# label files


def _outside(v: float) -> bool:
    return not (0.0 < v <= 1.0)


def read_labels(path, classes: int | None = None) -> np.ndarray:
    """A label file -> float32 ``(n, 5)`` array of ``class, x, y, w, h`` (values as ``fscanf("%f")`` reads
    them). One-line ``file:line`` :class:`DarknetError` for a missing file, a line that is not 5 fields, a
    non-number, a class id that is not an integer in ``[0, classes)``, or a non-finite value; one
    :class:`LabelWarning` per file for coordinates outside ``(0, 1]`` (kept as written, see the module doc)."""
    p = os.fspath(path)
    raw = read_input(p, DarknetError, "label file", "a label file", "label file")
    rows = []
    outside = []
    for lineno, line in enumerate(raw.decode("utf-8-sig", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DarknetError(f"expected 5 fields 'class x y w h', got {len(fields)}: '{line.strip()[:60]}'",
                               p, lineno)
        cls_tok = fields[0]
        if not cls_tok.lstrip("+-").isdigit():
            raise DarknetError(f"class id '{cls_tok}' is not an integer", p, lineno)
        cid = int(cls_tok)
        if cid < 0 or (classes is not None and cid >= classes):
            rng = f"[0, {classes - 1}]" if classes is not None else "at least 0"
            raise DarknetError(f"class id {cid} out of range: must be {rng}", p, lineno)
        vals = []
        for name, tok in zip("xywh", fields[1:]):
            try:
                v = float(np.float32(float(tok)))
            except ValueError:
                raise DarknetError(f"{name} '{tok}' is not a number", p, lineno) from None
            if not math.isfinite(v):
                raise DarknetError(f"{name} = {tok} is not finite", p, lineno)
            vals.append(v)
        bad = [f"{n}={t}" for n, t, v in zip("xywh", fields[1:], vals) if _outside(v)]
        if bad:
            outside.append((lineno, bad))
        rows.append([cid] + vals)
    if outside:
        lineno, bad = outside[0]
        more = f" (and {len(outside) - 1} more line{'s' if len(outside) > 2 else ''})" if len(outside) > 1 else ""
        warnings.warn(LabelWarning(f"{p}:{lineno}: {', '.join(bad)} outside (0, 1]{more}; kept as written "
                                   f"(Darknet's map uses it; its training drops boxes with x or y outside and "
                                   f"clips w, h to 1)"), stacklevel=2)
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def read_dataset(image_paths, classes: int | None = None, warn: bool = True):
    """Labels of every image: ``(list of (n, 5) arrays, list of image paths without a label file)``. A missing
    label file is an image without objects, as in Darknet; with ``warn`` they are summarised in one
    :class:`LabelWarning`. Bad label files raise (see :func:`read_labels`)."""
    labels, missing = [], []
    for img in image_paths:
        lp = label_path(img)
        if not os.path.isfile(lp):
            missing.append(img)
            labels.append(np.zeros((0, 5), np.float32))
            continue
        labels.append(read_labels(lp, classes))
    if warn and missing:
        warnings.warn(LabelWarning(f"{len(missing)} of {len(labels)} images have no label file (counted as images "
                                   f"without objects), e.g. {label_path(missing[0])}"), stacklevel=2)
    return labels, missing


def train_filter(labels: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """Darknet's ``fill_truth_detection`` checks (after augmentation): drop boxes narrower than one network
    pixel (``w < 1/net_w`` or ``h < 1/net_h``) or with ``x``/``y`` outside ``(0, 1]``; clip ``w``/``h`` to 1."""
    lab = np.asarray(labels, dtype=np.float32).reshape(-1, 5).copy()
    x, y, w, h = lab[:, 1], lab[:, 2], lab[:, 3], lab[:, 4]
    keep = ~((w < np.float32(1.0) / np.float32(net_w)) | (h < np.float32(1.0) / np.float32(net_h)))
    keep &= (x > 0) & (x <= 1) & (y > 0) & (y <= 1)
    lab = lab[keep]
    np.minimum(lab[:, 3:5], np.float32(1.0), out=lab[:, 3:5])
    return lab
