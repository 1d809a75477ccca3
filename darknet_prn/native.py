"""Access to the optional C kernels (``darknet_prn._native``, built by ``pip install``).

They compute the same bits as the code they replace (JPEG Huffman decoding, else libjpeg; stb_image's IDCT,
up-sampling and colour conversion; Darknet's to-float + resize, else numpy), several times faster. When the
extension is missing (no C compiler at install time) the fallbacks run. ``DARKNET_PRN_NATIVE=0`` in the
environment, or :func:`use_native(False) <use_native>`, switches them off (tests compare both paths).

The kernels can split an image over :func:`set_threads` threads (the split never changes a result). The default
is 1: right after a torch forward, torch's OpenMP workers keep spinning on the other cores for a while, and a
second decoding thread then costs more than it saves (the detect loop on 2 cores: 26.1 ms per image with 1
thread, 27.6 with 2); decoding images with nothing else running is ~10 % faster on 2 threads.
"""
from __future__ import annotations

import os

_enabled = os.environ.get("DARKNET_PRN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")
_module = None
_tried = False


def _load():
    global _module, _tried
    if not _tried:
        _tried = True
        try:
            from . import _native
            _module = _native
        except ImportError:
            _module = None
    return _module


def module():
    """The extension module when it is built and enabled, else ``None``."""
    return _load() if _enabled else None


def available() -> bool:
    """Whether the extension was built (whatever :func:`use_native` says)."""
    return _load() is not None


def use_native(flag: bool) -> bool:
    """Turn the C kernels on or off for this process; returns the previous setting."""
    global _enabled
    prev, _enabled = _enabled, bool(flag)
    return prev


def set_threads(n: int) -> int:
    """Threads the C kernels split an image over (1..16); returns the previous number (1 without the kernels)."""
    mod = _load()
    return mod.set_threads(int(n)) if mod is not None else 1
