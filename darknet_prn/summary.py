"""``darknet-prn summary``: per-layer table and totals (BFLOPs and ``.weights`` size as Darknet counts them)."""
from __future__ import annotations

import json
import sys

from .graph import Network, load_network

_SHORT = {"convolutional": "conv", "maxpool": "max", "local_avgpool": "lavg", "avgpool": "avg",
          "shortcut": "short", "partial_shortcut": "pshort", "scale_channels": "scale", "upsample": "upsample",
          "gaussian_yolo": "Gyolo", "connected": "conn", "normalization": "lrn", "batchnorm": "bnorm",
          "activation": "act", "contrastive": "contr"}


def layer_info(l) -> dict:
    p = l.p
    d = {"index": l.index, "type": l.type, "input": list(l.in_shape), "output": list(l.out_shape),
         "bflops": round(l.bflops, 9), "weights_floats": l.weights_floats}
    if l.type == "convolutional":
        d.update(filters=p["filters"], size=p["size"], stride=[p["blur_stride"][1], p["blur_stride"][0]],
                 groups=p["groups"], dilation=p["dilation"], activation=p["activation"])
    elif l.type in ("maxpool", "local_avgpool"):
        d.update(size=p["size"], stride=[p["stride_x"], p["stride_y"]])
    elif l.type == "local":
        d.update(filters=p["filters"], size=p["size"], stride=[p["stride"], p["stride"]])
    elif l.type == "connected":
        d.update(filters=p["outputs"])
    if l.refs:
        d["from"] = list(l.refs)
    return d


def conv_bflops(net: Network, types=("convolutional",)) -> float:
    """BFLOPs of the given layer types only. Convolutions alone reproduce the PRN paper's Table 2;
    convolutions + maxpools its Table 3 (2019 Darknet counted no other layer)."""
    return sum(l.bflops for l in net.layers if l.type in types)


def summary_dict(net: Network) -> dict:
    return {"cfg": net.path, "width": net.width, "height": net.height, "channels": net.channels,
            "layers": [layer_info(l) for l in net.layers], "bflops": round(net.bflops, 6),
            "bflops_conv": round(conv_bflops(net), 6),
            "bflops_conv_maxpool": round(conv_bflops(net, ("convolutional", "maxpool")), 6),
            "weights_floats": net.weights_floats,
            "params": net.params, "running_stat_floats": net.running_floats, "outputs": net.output_layers}


def _shape(s):
    c, h, w = s
    return f"{w:4d} x{h:4d} x{c:5d}"


def format_table(net: Network) -> str:
    rows = ["   layer     filters  size/strd(dil)      input                output"]
    for l in net.layers:
        info = layer_info(l)
        name = _SHORT.get(l.type, l.type)
        filt = f"{info['filters']:5d}" if "filters" in info else "     "
        geo = ""
        if "size" in info:
            sx, sy = info["stride"]
            st = f"{sx:2d}" if sx == sy else f"{sx}x{sy}"
            geo = f"{info['size']:2d} x{info['size']:2d}/{st}"
            if info.get("dilation", 1) > 1:
                geo += f"({info['dilation']})"
            if info.get("groups", 1) > 1:
                geo += f" g{info['groups']}"
        elif l.refs:
            geo = " ".join(str(r) for r in l.refs)
        bf = f" {l.bflops:7.3f} BF" if l.bflops > 0 else ""
        rows.append(f"{l.index:4d} {name:<9s} {filt}  {geo:<16s} {_shape(l.in_shape)} -> {_shape(l.out_shape)}{bf}")
    rows.append(f"Total BFLOPS {net.bflops:5.3f} (convolutions only {conv_bflops(net):.3f})")
    rows.append(f"Weights: {net.weights_floats:,} floats ({4 * net.weights_floats + 20:,} bytes as .weights), "
                f"{net.params:,} learnable parameters, {net.running_floats:,} BN running statistics")
    rows.append(f"Outputs: layers {', '.join(str(i) for i in net.output_layers)}")
    return "\n".join(rows)


def add_arguments(p):
    p.add_argument("cfg", help="Darknet .cfg file")
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args) -> int:
    net = load_network(args.cfg, args.width, args.height)
    if args.json:
        json.dump(summary_dict(net), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(net))
    return 0
