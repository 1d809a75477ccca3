"""Reduced-precision inference: which precisions exist, where each can run, and the dtype the plan computes in.

``f32`` is the default and the Darknet-exact one. ``bf16`` runs the fast plan's convolutions in bfloat16 through
oneDNN (weights packed once in bf16, activations bf16 and channels-last between layers: AVX-512 BF16 / AMX
kernels) on CPUs that have BF16, and on CUDA; ``fp16`` is half precision for CUDA devices. The heads (``[yolo]``
logistic, decoding, NMS) and every layer without a specialised plan step run in float32.
``docs/performance.md`` gives speed and accuracy of each.
"""
from __future__ import annotations

import torch

from .errors import DarknetError

PRECISIONS = ("f32", "bf16", "fp16")
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """oneDNN's own check: AVX-512 BF16 (or AMX) instructions on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(precision: str, device) -> torch.dtype:
    """The dtype convolutions run in for ``precision`` on ``device``; a one-line DarknetError where it cannot."""
    if precision not in PRECISIONS:
        raise DarknetError(f"unknown precision '{precision}' ({', '.join(PRECISIONS)})")
    kind = torch.device(device).type
    if precision == "bf16" and kind == "cpu" and not cpu_has_bf16():
        raise DarknetError("precision bf16: this CPU has no BF16 instructions (AVX-512 BF16 or AMX); use f32")
    if precision == "fp16" and kind != "cuda":
        raise DarknetError(f"precision fp16 needs a CUDA device (this one is {kind}); on CPU use bf16 or f32")
    return DTYPES[precision]


def check_backend_precision(backend: str, precision: str, device) -> None:
    """A one-line DarknetError where ``backend`` cannot run ``precision`` on ``device``."""
    compute_dtype(precision, device)
    if precision != "f32" and backend == "onnxruntime":
        raise DarknetError(f"precision {precision}: the onnxruntime backend runs f32 only (export --half writes an "
                           "fp16 ONNX model); use backend torch or openvino")
    if precision == "fp16" and backend == "openvino":
        raise DarknetError("precision fp16: the openvino backend runs on CPU (f32 or bf16)")


MATCH_IOU = 0.5


def _iou(a, b) -> float:
    """IoU of two ``[left, top, width, height]`` boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def detection_change(ref: list, other: list) -> dict:
    """How far ``other`` (one image's detections, ``Detector.detect`` dicts) moved from ``ref``: each reference
    detection matched to the same-class detection of ``other`` with the closest box, if that box overlaps it
    (IoU >= ``MATCH_IOU``); ``conf`` is the max confidence change in points (0-100), ``box`` the max change of
    left/top/width/height in pixels, ``unmatched`` the detections of either list without such a partner (a pair
    is matched once; a detection that vanished is not paired with a neighbour of its class)."""
    import numpy as np
    free = list(other)
    conf = box = 0.0
    unmatched = 0
    for d in ref:
        want = np.asarray(d["bbox"], dtype=np.float64)
        cands = [o for o in free if o["class_id"] == d["class_id"] and _iou(o["bbox"], want) >= MATCH_IOU]
        if not cands:
            unmatched += 1
            continue
        best = min(cands, key=lambda o: float(np.abs(np.asarray(o["bbox"]) - want).max()))
        free.remove(best)
        box = max(box, float(np.abs(np.asarray(best["bbox"]) - want).max()))
        conf = max(conf, abs(best["confidence"] - d["confidence"]) * 100.0)
    return {"conf": conf, "box": box, "unmatched": unmatched + len(free)}
