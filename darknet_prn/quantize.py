"""int8 post-training static quantization: ``darknet-prn quantize CFG WEIGHTS --data DATA -o model.int8.onnx``.

The network is exported to ONNX (``darknet_prn.export``: BN folded, dynamic batch) and quantized with ONNX
Runtime's ``quantize_static`` in the QDQ format (int8 weights per output channel, uint8 activations), calibrated
on images of a Darknet dataset: the ``train=`` list of the ``.data`` file (else ``valid=``), pre-processed
exactly as ``detect`` does (Darknet's resize, or letterbox with the cfg's ``letter_box``). The heads stay float32:
every node between a head output and the last convolution before it, that convolution included, is left out of
the quantization. The file runs with ``detect CFG model.int8.onnx --backend onnxruntime|openvino`` (and ``map``);
OpenVINO executes the QDQ graph with its int8 (VNNI/AMX) kernels. ``docs/performance.md`` gives speed and mAP.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from .errors import DarknetError

METHODS = ("minmax", "entropy", "percentile")


def head_nodes(model) -> list:
    """Names of the ONNX nodes from each graph output back to (and including) the first Conv on every path."""
    producer = {o: n for n in model.graph.node for o in n.output}
    keep, stack, seen = [], [o.name for o in model.graph.output], set()
    while stack:
        n = producer.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        keep.append(n.name)
        if n.op_type != "Conv":
            stack.extend(n.input)
    return keep


def calibration_images(data, net_w: int, net_h: int, letterbox: bool, limit: int) -> list:
    """Up to ``limit`` network inputs (1, 3, net_h, net_w) from the ``train=`` (else ``valid=``) list of ``data``."""
    from . import preprocess as pre
    from .dataset import DataConfig, read_list
    dc = DataConfig.read(data)
    key = "train" if dc.get("train") is not None else "valid"
    lst = dc.file(key, what="list of calibration images")
    paths = read_list(lst)
    if not paths:
        raise DarknetError(f"{key}= lists no images", lst)
    if len(paths) > limit:        # evenly spread over the list (lists are often sorted by scene)
        paths = [paths[int(i * len(paths) / limit)] for i in range(limit)]
    out = []
    for p in paths:
        img = pre.read_image(p)
        out.append(pre.prepare(img, net_w, net_h, letterbox=letterbox)[None])
    return out


def quantize(cfg, weights, data, out, images: int = 200, method: str = "minmax", letterbox=None,
             width=None, height=None, progress: bool = True) -> str:
    """Writes the int8 QDQ ONNX model of ``cfg`` + ``weights`` calibrated on ``data`` to ``out`` (atomically)."""
    if method not in METHODS:
        raise DarknetError(f"unknown calibration method '{method}' ({', '.join(METHODS)})")
    if images < 1:
        raise DarknetError(f"--images {images}: must be at least 1")
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError:
        raise DarknetError("quantize needs onnx and onnxruntime: pip install 'darknet-prn[onnx]'") from None
    from .fileio import atomic_write
    from .model import Darknet
    net = Darknet.from_cfg(cfg, width=width, height=height)
    net.load_weights(weights)
    net.eval()
    g = net.graph
    lb = bool(g.net.get("letter_box", 0)) if letterbox is None else bool(letterbox)
    calib = calibration_images(data, int(g.width), int(g.height), lb, images)
    say = (lambda m: print(f"darknet-prn quantize: {m}", file=sys.stderr)) if progress else (lambda m: None)
    say(f"calibrating on {len(calib)} images ({method})")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x}

    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="darknet-prn-q-") as d:
        f32 = os.path.join(d, "model.onnx")
        net.export_onnx(f32, dynamic_batch=True, verify=False)
        q = os.path.join(d, "model.int8.onnx")
        import logging
        logging.getLogger().setLevel(logging.ERROR)     # quantize_static's advice lines
        quantize_static(f32, q, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=cm,
                        nodes_to_exclude=head_nodes(onnx.load(f32)),
                        extra_options={"CalibTensorRangeSymmetric": False})
        with open(q, "rb") as src:
            blob = src.read()
    atomic_write(out, lambda f: f.write(blob), "int8 ONNX model")
    say(f"wrote {out} ({len(blob) / 1e6:.1f} MB)")
    return os.fspath(out)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser):
    parser.add_argument("cfg", help="Darknet .cfg file")
    parser.add_argument("weights", help="Darknet .weights file")
    parser.add_argument("--data", required=True, help="Darknet .data file: calibration images from train= "
                                                      "(else valid=)")
    parser.add_argument("-o", "--output", required=True, help="the int8 ONNX model to write (e.g. model.int8.onnx)")
    parser.add_argument("--images", type=int, default=200, help="calibration images (default 200, spread over "
                                                                "the list)")
    parser.add_argument("--method", default="minmax", choices=METHODS, help="activation range calibration "
                                                                           "(default minmax)")
    parser.add_argument("--letterbox", action="store_true", default=None,
                        help="letterbox the calibration images (default: the cfg's letter_box)")
    parser.add_argument("--width", type=int, help="override the cfg's [net] width")
    parser.add_argument("--height", type=int, help="override the cfg's [net] height")


def run(args) -> int:
    quantize(args.cfg, args.weights, args.data, args.output, images=args.images, method=args.method,
             letterbox=args.letterbox, width=args.width, height=args.height)
    return 0
