"""Access to the optional C kernels (``darknet_prn._native``, built by ``pip install``).

They compute the same bits as the code they replace (JPEG Huffman decoding, else libjpeg; stb_image's IDCT,
up-sampling and colour conversion; Darknet's to-float + resize, else numpy), several times faster. When the
extension is missing (no C compiler at install time) the fallbacks run. ``DARKNET_PRN_NATIVE=0`` in the
environment, or :func:`use_native(False) <use_native>`, switches them off (tests compare both paths).

The kernels split an image over an OpenMP team (when the compiler had OpenMP): torch is imported first, so
the extension binds to torch's own ``libgomp`` and the team is made of torch's intra-op threads -- the workers
that keep spinning for a while after a torch forward pick the work up at once. (With threads of our own the
second one competed with a spinning torch worker for the core: in the detect loop on 2 cores, 27.6 ms per
image vs 26.1 on one thread.) :func:`set_threads` overrides the count (0: torch's); the split never changes a
result.
"""
from __future__ import annotations

import functools
import os

_enabled = os.environ.get("DARKNET_PRN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=None)
def _load():
    """The extension, imported once (None when it was not built)."""
    try:
        import torch  # noqa: F401 -- first, so that the extension shares torch's OpenMP runtime and threads
        from . import _native
        return _native
    except ImportError:
        return None


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
    """Threads the C kernels split an image over (0: OpenMP's default, i.e. torch's intra-op thread count);
    returns the previous setting."""
    mod = _load()
    return mod.set_threads(int(n)) if mod is not None else 0


def mish_inplace(t):
    """Darknet's mish in place on a dense float32 CPU tensor (contiguous or channels-last) through the C kernel;
    returns ``t``, or None where the kernel is off or cannot take the tensor (the caller then uses torch's)."""
    import torch
    mod = module()
    if mod is None or t.dtype != torch.float32 or t.device.type != "cpu" or t.requires_grad:
        return None
    if t.is_contiguous():
        flat = t.view(-1)
    elif t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        flat = t.permute(0, 2, 3, 1).reshape(-1)
    else:
        return None
    mod.mish_inplace(flat.numpy())
    return t
