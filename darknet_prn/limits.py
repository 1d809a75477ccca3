"""Resource limits checked before anything big is allocated: a model's memory (from its layer graph) and an
image's pixel count (from the file header, before decoding; like Pillow's decompression-bomb guard).

Both are adjustable: ``DARKNET_PRN_MAX_MEMORY`` (bytes, with an optional K/M/G/T suffix; default 8G; ``0`` or
``none``: no limit) or ``Darknet.from_cfg(..., max_memory=)``; ``DARKNET_PRN_MAX_IMAGE_PIXELS`` (default
178,956,970: Pillow's error threshold; ``0``/``none``: no limit) or :data:`MAX_IMAGE_PIXELS`.
"""
from __future__ import annotations

import os
import re
import struct

from .errors import CfgError, DarknetError

DEFAULT_MAX_MEMORY = 8 << 30
DEFAULT_MAX_IMAGE_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)      # Pillow raises DecompressionBombError above
MAX_IMAGE_PIXELS = None       # set in Python to override the environment (0: no limit)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _env_size(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", raw.lower())
    if raw.strip().lower() in ("none", "off", "unlimited"):
        return 0
    if m is None:
        raise DarknetError(f"{name}={raw[:40]!r}: not a size (e.g. 16G, 500M, 0 for no limit)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def max_memory(override=None) -> int:
    """The model-memory limit in bytes (0: none)."""
    if override is not None:
        return int(override)
    return _env_size("DARKNET_PRN_MAX_MEMORY", DEFAULT_MAX_MEMORY)


def estimate_memory(graph, batch: int = 1) -> tuple:
    """``(total bytes, layer, what)``: float32 parameters plus the largest layer input + output (batch
    ``batch``), and the layer that dominates (the largest weights or the largest activation)."""
    params = sum(l.weights_floats for l in graph.layers) * 4
    big_w = max(graph.layers, key=lambda l: l.weights_floats)
    big_a = max(graph.layers, key=lambda l: l.outputs + _prod(l.in_shape) + _workspace(l))
    act = (big_a.outputs + _prod(big_a.in_shape) + _workspace(big_a)) * 4 * batch
    total = params + act
    if big_w.weights_floats * 4 >= act:
        return total, big_w, f"its {big_w.weights_floats:,} weights take {gib(big_w.weights_floats * 4)}"
    return total, big_a, (f"its input, output and workspace ({_fmt(big_a.in_shape)} -> {_fmt(big_a.out_shape)}) "
                          f"take {gib(act)}")


def check_memory(graph, limit=None) -> None:
    """CfgError naming the dominant layer when the estimate exceeds the limit."""
    limit = max_memory(limit)
    if not limit or not graph.layers:
        return
    total, layer, what = estimate_memory(graph)
    if total > limit:
        raise CfgError(f"[{layer.section.name}] layer {layer.index}: the network needs about {gib(total)} "
                       f"(parameters and the largest activations; {what}), over the {gib(limit)} limit; set "
                       f"DARKNET_PRN_MAX_MEMORY (e.g. {_suggest(total)}) or from_cfg(..., max_memory=) to allow it",
                       layer.section.path, layer.section.line)


def _workspace(l) -> int:
    """Darknet's convolution workspace (``get_workspace_size``: the im2col buffer), in floats."""
    if l.type not in ("convolutional", "local") or "size" not in l.p:
        return 0
    return _prod(l.in_shape) // max(1, int(l.p.get("groups", 1))) * int(l.p["size"]) ** 2 * _prod(l.out_shape[1:]) \
        // max(1, _prod(l.in_shape[1:]))


def _prod(shape) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


def _fmt(shape) -> str:
    return "x".join(str(int(v)) for v in shape)


def _suggest(total: int) -> str:
    return f"{-(-total // 2**30) + 1}G"


# -- images --------------------------------------------------------------------------------------------------


def max_image_pixels() -> int:
    if MAX_IMAGE_PIXELS is not None:
        return int(MAX_IMAGE_PIXELS)
    return _env_size("DARKNET_PRN_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def header_size(data: bytes):
    """``(width, height)`` from a JPEG (its frame header), PNG (IHDR), GIF, BMP or WebP header; None when the
    format is another or the header is unreadable (the decoder reports that)."""
    try:
        if data[:2] == b"\xff\xd8":
            from .stbjpeg import frame_size
            return frame_size(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes):
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = int.from_bytes(data[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    return None


def check_image_pixels(data: bytes, path=None) -> None:
    """DarknetError when the header declares more pixels than the limit (checked before decoding)."""
    limit = max_image_pixels()
    size = header_size(data) if limit else None
    if size is None:
        return
    w, h = size
    if w * h > limit:
        raise DarknetError(f"the image declares {w}x{h} = {w * h:,} pixels, over the {limit:,}-pixel limit (a "
                           f"decompression bomb?); set DARKNET_PRN_MAX_IMAGE_PIXELS to allow it", path)


def is_allocation_error(e: BaseException) -> bool:
    """Whether ``e`` is an allocation that failed (Python's MemoryError, torch's CPU/CUDA allocator errors)."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("alloc" in text or "out of memory" in text)
