"""Image pre-processing exactly as Darknet's ``detector test`` does it (spec §3.10), vectorised with numpy.

Darknet decodes with stb_image to 8-bit RGB, converts to float with ``(float)(u8 / 255.)``, then either
``resize_image`` (two-pass bilinear, aspect ratio not kept; the default) or ``letterbox_image`` (aspect kept,
centred on a 0.5 grey canvas; ``[net] letter_box=1`` or ``-letter_box``). Everything here works on HWC float32
arrays (channels last, RGB) and reproduces Darknet's float32 arithmetic operation by operation, so the network
input matches Darknet's up to the JPEG decoder (other decoders than stb may differ by ±1 LSB in a few pixels).

JPEGs are decoded bit-exactly as stb_image does (:mod:`darknet_prn.stbjpeg`); other formats (and JPEGs that
module declines) with OpenCV from the file's bytes (so non-ASCII paths work), EXIF orientation ignored (stb
ignores it too), grey images expanded to 3 channels, an alpha channel dropped and 16-bit samples shifted
right by 8, as stb does with ``req_comp = 3``. Decoded images are RGB here.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import DarknetError
from .fileio import read_input
from .geometry import letterbox_paste, letterbox_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm",
                    ".pnm", ".sr", ".ras", ".pxm", ".pic", ".hdr", ".exr", ".gif", ".tga")

# Darknet: (float)(u8 / 255.) -- a double division rounded once to float32; a 256-entry table is exact.
_U8_TO_FLOAT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def _native_module():
    from . import native
    return native.module()


def _cv2():
    from .limits import max_image_pixels
    limit = max_image_pixels()
    if limit:                                         # OpenCV's own guard, for the formats we do not parse
        os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(limit))
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a dependency
        raise DarknetError(f"OpenCV (opencv-python-headless) is required to read images: {e}") from None
    return cv2


def decode_image(data: bytes, path=None) -> np.ndarray:
    """Decode encoded image bytes to an ``(H, W, 3)`` uint8 **RGB** array, as stb_image would.

    JPEGs go through :mod:`darknet_prn.stbjpeg` (bit-exact stb pixels) when it can guarantee them, everything
    else (and JPEGs it declines) through OpenCV. Raises :class:`DarknetError` naming ``path``.
    """
    from .limits import check_image_pixels
    check_image_pixels(data, path)                   # from the header, before any decoder allocates
    try:
        return _decode(data, path)
    except MemoryError:
        raise DarknetError("not enough memory to decode the image", path) from None


def _decode(data: bytes, path) -> np.ndarray:
    if data[:2] == b"\xff\xd8" and path is not None:
        from .stbjpeg import decode_jpeg_stb
        rgb = decode_jpeg_stb(path, data)
        if rgb is not None:
            return rgb
    cv2 = _cv2()
    buf = np.frombuffer(data, dtype=np.uint8)
    img = None
    if buf.size:
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | getattr(cv2, "IMREAD_IGNORE_ORIENTATION", 0)
        try:
            img = cv2.imdecode(buf, flags)
        except cv2.error:
            img = None
        if img is None and data[:3] == b"GIF":
            img = _decode_gif(cv2, path)
    if img is None:
        raise DarknetError("cannot decode the image (not an image, unsupported format or corrupt file)", path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.dtype == np.uint16:                       # stbi__convert_16_to_8
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:                      # float formats (HDR/EXR)
        img = (np.clip(np.nan_to_num(img.astype(np.float64)), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, 2::-1])


def _decode_gif(cv2, path):
    """First frame of a GIF through VideoCapture (OpenCV builds without an imdecode GIF reader)."""
    if path is None:
        return None
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    return frame if ok else None


def read_image(path) -> np.ndarray:
    """Read an image file to ``(H, W, 3)`` uint8 **RGB**. Raises :class:`DarknetError` naming the file."""
    p = os.fspath(path)
    data = read_input(p, DarknetError, "image file", "an image", "the image")
    if not data:
        raise DarknetError("empty file, not an image", p)
    return decode_image(data, p)


def to_float(img_u8: np.ndarray, bgr: bool = False) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> float32 RGB in [0, 1] exactly as Darknet's ``(float)(u8 / 255.)``."""
    img = _check_array(img_u8)
    if bgr:
        img = img[:, :, ::-1]
    return _U8_TO_FLOAT[img]


def _check_array(img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise DarknetError(f"expected an image array of shape (H, W, 3), got {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise DarknetError(f"empty image array of shape {a.shape}")
    if a.dtype != np.uint8:
        raise DarknetError(f"expected a uint8 image array, got dtype {a.dtype}")
    return a


def resize_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image`` on an ``(H, W, C)`` float32 array -> ``(h, w, C)`` float32.

    Two separable passes, align-corners scale ``(W-1)/(w-1)`` in float32, the last output column copies the last
    input column, and -- Darknet's quirk, kept -- the last output row is only ``(1-dy)·part[iy]`` (its ``dy`` term
    is skipped). Each product and sum is rounded to float32 as in the C code.
    """
    im = np.asarray(im, dtype=np.float32)
    ih, iw = im.shape[:2]
    if iw == w and ih == h:
        return im.copy()
    f32 = np.float32
    # horizontal pass: (ih, w, C)
    if iw == 1:
        part = np.repeat(im[:, :1], w, axis=1)
    else:
        ix, ix1, dx = _resize_axes(iw, w)
        ix[-1] = iw - 1  # c == w-1: copies the edge (no interpolation)
        dx[-1] = 0
        a = (f32(1) - dx)[None, :, None] * im[:, ix]
        b = dx[None, :, None] * im[:, ix1]
        part = a + b
        part[:, -1] = im[:, -1]
    # vertical pass: (h, w, C)
    iy, iy1, dy = _resize_axes(ih, h)
    out = (f32(1) - dy)[:, None, None] * part[iy]
    if ih > 1:
        rows = np.arange(h - 1)  # the last row gets no dy term (Darknet's `continue`)
        out[rows] = out[rows] + dy[rows, None, None] * part[iy1[rows]]
    return out.astype(f32, copy=False)


def letterbox_image(im: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """Darknet's ``letterbox_image``: resize keeping the aspect ratio, paste centred on a 0.5 canvas."""
    ih, iw = im.shape[:2]
    new_w, new_h = letterbox_size(iw, ih, net_w, net_h)
    resized = resize_image(im, new_w, new_h)
    out = np.full((net_h, net_w, im.shape[2]), 0.5, dtype=np.float32)
    box = letterbox_paste(new_w, new_h, net_w, net_h)     # embed_image: the part that falls inside the canvas
    if box is not None:
        out[box[0], box[1]] = resized[box[2], box[3]]
    return out


def _resize_axes(src: int, dst: int):
    """Darknet's per-output ``(i0, i1, d)`` for one axis (float32 scale ``(src-1)/(dst-1)``).

    Past 2**24 pixels ``float(src - 1)`` can round up to ``src``, and Darknet would then read one row or column
    past the image: such a tap is clamped to the edge with ``d = 0`` (here, in ``resize_image`` and in the C
    kernel alike); every tap inside the image is Darknet's own.
    """
    f32 = np.float32
    scale = f32(src - 1) / f32(dst - 1) if dst > 1 else f32(0)
    s = np.arange(dst, dtype=f32) * scale
    i0 = s.astype(np.int64)
    d = (s - i0.astype(f32)).astype(f32)
    past = i0 > src - 1
    i0[past] = src - 1
    d[past] = 0
    return i0, np.minimum(i0 + 1, src - 1), d


_STRIP = 16          # output rows per strip: keeps every temporary small (cache-resident, no fresh pages)


def resize_u8_chw(img_u8: np.ndarray, w: int, h: int, out: np.ndarray | None = None,
                  bgr: bool = False) -> np.ndarray:
    """``resize_image(to_float(img_u8), w, h)`` laid out CHW: uint8 ``(H, W, 3)`` -> float32 ``(3, h, w)``
    (channels reversed first when ``bgr``).

    The same float32 operations as :func:`to_float` + :func:`resize_image` (identical bits): in C
    (:mod:`darknet_prn.native`) when built, else in numpy strips of output rows, gathering uint8 columns before
    the uint8->float table, so no full-size float temporary is ever made. Needs ``W, H, w, h >= 2`` (other sizes
    go through :func:`resize_image`).
    """
    f32 = np.float32
    ih, iw = img_u8.shape[:2]
    if out is None:
        out = np.empty((3, h, w), f32)
    native = _native_module()
    if native is not None and img_u8.shape[2] == 3:
        native.resize_chw(np.ascontiguousarray(img_u8), ih, iw, bgr, _U8_TO_FLOAT, out, h, w)
        return out
    if bgr:
        img_u8 = img_u8[:, :, ::-1]
    ix, ix1, dx = _resize_axes(iw, w)
    ix[-1] = iw - 1                                   # the last column copies the edge
    dx[-1] = 0
    iy, iy1, dy = _resize_axes(ih, h)
    wa, wb = (f32(1) - dx), dx
    ha, hb = (f32(1) - dy)[:, None], dy[:, None]
    lut = _U8_TO_FLOAT
    for o0 in range(0, h, _STRIP):
        o1 = min(o0 + _STRIP, h)
        last = min(o1, h - 1)                         # the last output row gets no dy term
        rows = np.unique(np.concatenate((iy[o0:o1], iy1[o0:last])))   # the input rows this strip reads
        strip = img_u8[rows]
        fa = lut.take(strip[:, ix].transpose(2, 0, 1))     # (3, rows, w)
        fb = lut.take(strip[:, ix1].transpose(2, 0, 1))
        fa *= wa
        fb *= wb
        fa += fb
        fa[:, :, -1] = lut.take(strip[:, -1].T)
        dst = out[:, o0:o1]
        np.multiply(fa[:, np.searchsorted(rows, iy[o0:o1])], ha[o0:o1], out=dst)
        if last > o0:
            dst[:, :last - o0] += fa[:, np.searchsorted(rows, iy1[o0:last])] * hb[o0:last]
    return out


def prepare(img_u8: np.ndarray, net_w: int, net_h: int, letterbox: bool = False, bgr: bool = False) -> np.ndarray:
    """uint8 HWC image -> the network input as Darknet builds it: float32 ``(3, net_h, net_w)``, RGB, [0, 1]."""
    img = _check_array(img_u8)
    ih, iw = img.shape[:2]
    if letterbox:
        new_w, new_h = letterbox_size(iw, ih, net_w, net_h)
    else:
        new_w, new_h = net_w, net_h
    if min(iw, ih, new_w, new_h) < 2 or (iw == new_w and ih == new_h):
        im = to_float(img, bgr=bgr)
        net_in = letterbox_image(im, net_w, net_h) if letterbox else resize_image(im, net_w, net_h)
        return np.ascontiguousarray(net_in.transpose(2, 0, 1))
    if not letterbox:
        return resize_u8_chw(img, net_w, net_h, bgr=bgr)
    resized = resize_u8_chw(img, new_w, new_h, bgr=bgr)
    out = np.full((3, net_h, net_w), 0.5, dtype=np.float32)
    box = letterbox_paste(new_w, new_h, net_w, net_h)
    if box is not None:
        out[:, box[0], box[1]] = resized[:, box[2], box[3]]
    return out
