"""Keeps the memory of freed activations in the process heap (glibc's malloc), so a forward does not page-fault.

The inference plan allocates every layer's output afresh and frees it once its last reader has run. glibc serves
blocks above its mmap threshold (128 KiB, raised on the fly up to 32 MiB as large blocks are freed) with fresh
``mmap`` pages and gives them back on ``free``, and trims the top of the heap above its trim threshold: the next
forward then faults every page in again (the kernel zero-fills each 4 KiB page). Measured here: yolov4 at 416,
one thread, ~12,000 page faults (47 MB) per forward and 3-7 % of its time; yolov7-tiny 0-2,700 per forward,
depending on the order in which earlier blocks were freed.

:func:`keep_freed_memory` sets both thresholds once per process (``mallopt``: blocks up to 32 MiB from the heap,
no trimming below 1 GiB of free top), when the first CPU plan is built. Memory a forward freed is then reused by
the next one instead of being returned to the kernel, as jemalloc/tcmalloc or ONNX Runtime's and OpenVINO's own
arenas do; the process keeps its peak heap. ``DARKNET_PRN_KEEP_FREED_MEMORY=0`` in the environment leaves
malloc alone. Nothing happens off glibc.
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_MAX = 32 << 20          # glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2)
TRIM = 1 << 30

_done = None


def keep_freed_memory() -> bool:
    """Sets glibc's mmap and trim thresholds once per process (see the module docstring); True when they are set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("DARKNET_PRN_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM))
    except (OSError, AttributeError):
        pass
    return _done
