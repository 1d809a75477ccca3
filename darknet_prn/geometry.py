"""Darknet's window geometry rules, once: output sizes, where windows start, pads, channel ranges. No torch here.

``graph.py`` calls these while parsing and stores the results in ``Layer.p`` (``pads``, ``slices``,
``channels``, ...); the backends (reference modules, the fast plan, the ONNX export forms, ``convert-cfg``) read
the stored values. A rule written here is not written again anywhere else.

Pads are ``(top, left, bottom, right)``: the input padding after which Darknet's windows are the first
``out`` windows of a padding-free window op (convolution, pooling). ``top``/``left`` is where Darknet's first
window starts (negative: it starts inside the image, i.e. the input is cropped); ``bottom``/``right`` is never
negative (input rows no window reads are left in place, and the op's extra output rows are cut off).
"""
from __future__ import annotations

import numpy as np


def conv_out(n: int, size: int, stride: int, padding: int) -> int:
    """``convolutional_out_height``: ``(n + 2*padding - size) / stride + 1`` (Darknet ignores dilation here)."""
    return (n + 2 * padding - size) // stride + 1


def pool_out(n: int, size: int, stride: int, padding: int) -> int:
    """``[maxpool]``/``[local_avgpool]`` output size: ``(n + padding - size) / stride + 1`` (``padding`` is the
    total of both sides)."""
    return (n + padding - size) // stride + 1


def pool_start(padding: int) -> int:
    """Where a pooling window starts: Darknet's ``-padding/2`` offset (``w_offset = -l.pad / 2``)."""
    return padding // 2


def window_out(n: int, size: int, stride: int, pad_total: int = 0, dilation: int = 1) -> int:
    """How many windows a padding-free op (torch's, ONNX's) gives over ``n + pad_total`` cells."""
    return (n + pad_total - dilation * (size - 1) - 1) // stride + 1


def window_pads(n_in: int, n_out: int, size: int, stride: int, start: int, dilation: int = 1) -> tuple:
    """``(before, after)`` along one axis: ``n_out`` windows starting at ``j*stride - start``; ``after`` is
    clamped at 0."""
    need = (n_out - 1) * stride + dilation * (size - 1) + 1
    return start, max(need - n_in - start, 0)


def pads(in_hw, out_hw, size: int, strides, start: int, dilation: int = 1) -> tuple:
    """``(top, left, bottom, right)`` for ``out_hw`` windows of ``size`` over ``in_hw`` (see the module doc)."""
    t, b = window_pads(in_hw[0], out_hw[0], size, strides[0], start, dilation)
    l, r = window_pads(in_hw[1], out_hw[1], size, strides[1], start, dilation)
    return t, l, b, r


def symmetric(p: tuple) -> tuple:
    """Pads ``(top, left, bottom, right)`` as torch's symmetric padding ``(top, left)`` plus the far-side
    extra ``(bottom, right)`` it still lacks: ``((top, left), (extra_bottom, extra_right))``."""
    t, l, b, r = p
    return (t, l), (max(b - t, 0), max(r - l, 0))


def blur(antialiasing: int) -> tuple:
    """``(size, pad)`` of Darknet's anti-aliasing blur: 2x2 without padding for ``antialiasing=2``, else 3x3."""
    return (2, 0) if antialiasing == 2 else (3, 1)


def letterbox_size(w: int, h: int, net_w: int, net_h: int) -> tuple:
    """Darknet's ``(new_w, new_h)`` for letterboxing a ``w`` x ``h`` image into ``net_w`` x ``net_h`` (C ints; the
    comparison of the two scales in float32): ``letterbox_image`` and ``correct_yolo_boxes``."""
    if np.float32(net_w) / np.float32(w) < np.float32(net_h) / np.float32(h):
        return net_w, (h * net_w) // w
    return (w * net_h) // h, net_h


def letterbox_paste(new_w: int, new_h: int, net_w: int, net_h: int):
    """``embed_image`` of a ``new_w`` x ``new_h`` image centred on a ``net_w`` x ``net_h`` canvas: the slices
    ``(canvas rows, canvas cols, image rows, image cols)`` of the part inside the canvas, or None."""
    dx, dy = (net_w - new_w) // 2, (net_h - new_h) // 2
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + new_w, net_w), min(dy + new_h, net_h)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1), slice(y0 - dy, y1 - dy), slice(x0 - dx, x1 - dx)


def group_slice(channels: int, groups: int, group_id: int) -> tuple:
    """``[route] groups/group_id``: the channel range ``(start, stop)`` a route takes from one input."""
    c = channels // groups
    return c * group_id, c * (group_id + 1)


def strided_shortcut(shape: tuple, from_shape: tuple) -> tuple:
    """pjreddie's ``shortcut_cpu`` for sources of another width/height: ``(stride, sample, (c, h, w))``: the
    source read every ``stride`` cells, written to every ``sample``-th output cell, over ``min`` of each
    dimension."""
    (c, h, w), (fc, fh, fw) = shape, from_shape
    return max(1, fw // w), max(1, w // fw), (min(c, fc), min(h, fh), min(w, fw))


def shortcut_channels(c: int, c_from: int) -> int:
    """``[shortcut]`` adds the leading ``min(c, c_from)`` channels of a source of ``c_from`` channels to a
    ``c``-channel output (Darknet's ``shortcut_multilayer_cpu``)."""
    return min(c, c_from)
