"""``darknet-prn export``: the command line of :func:`darknet_prn.export.export_onnx` (kept apart from the
exporter so that ``export`` does not import ``model``, which imports ``export`` for ``Darknet.export_onnx``)."""
from __future__ import annotations

import os
import sys

from .export import DEFAULT_CONF_THRESH, DEFAULT_IOU_THRESH, DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export_onnx
from .errors import DarknetError
from .model import Darknet


def add_arguments(p):
    import argparse
    p.add_argument("cfg", metavar="CFG", help="Darknet .cfg file")
    p.add_argument("weights", metavar="WEIGHTS", help="Darknet .weights file")
    p.add_argument("-o", "--output", metavar="FILE.onnx",
                   help="output file (default: the weights file name with .onnx, in the current directory)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--width", type=int, help="network input width (overrides [net] width)")
    p.add_argument("--height", type=int, help="network input height (overrides [net] height)")
    p.add_argument("--batch", type=int, default=1, help="static batch size (default 1; see --dynamic-batch)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--decode", action="store_true",
                   help="one output 'detections' (N, boxes, 4+1+classes): cx, cy, w, h in input pixels, "
                        "objectness, class probabilities (objectness*class)")
    p.add_argument("--nms", action="store_true",
                   help="add ONNX NonMaxSuppression (implies --decode): output 'selected_indices' (K, 3)")
    p.add_argument("--conf-thresh", type=float, default=DEFAULT_CONF_THRESH,
                   help=f"--nms score threshold (default {DEFAULT_CONF_THRESH}, as darknet detector test)")
    p.add_argument("--iou-thresh", type=float, default=DEFAULT_IOU_THRESH,
                   help=f"--nms IoU threshold (default {DEFAULT_IOU_THRESH}, as darknet detector test)")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="fold batch norm into the convolutions (default on)")
    p.add_argument("--half", action="store_true", help="float16 weights and activations (input/outputs float32)")
    p.add_argument("--partial", action="store_true",
                   help="load a .weights file that does not fit the cfg as far as it goes (with a warning)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="check the file with ONNX Runtime against PyTorch (default: on when onnxruntime is "
                        "installed)")


def run(args) -> int:
    out = args.output
    if out is not None and not out.strip():
        raise DarknetError("-o/--output: empty file name")
    if not out:
        out = os.path.splitext(os.path.basename(args.weights))[0] + ".onnx"
    net = Darknet.from_cfg(args.cfg, width=args.width, height=args.height)
    net.load_weights(args.weights, partial=getattr(args, "partial", False))
    net.eval()
    res = export_onnx(net, out, opset=args.opset, dynamic_batch=args.dynamic_batch, decode=args.decode,
                      nms=args.nms, fuse=args.fuse, half=args.half, verify=args.verify, batch=args.batch,
                      conf_thresh=args.conf_thresh, iou_thresh=args.iou_thresh)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(res.summary())
    return 0
