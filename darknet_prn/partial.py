"""``darknet-prn partial CFG WEIGHTS OUT N``: Darknet's ``partial`` (``darknet.c``; ``load_weights_upto`` +
``save_weights_upto``): the arrays of layers ``0 .. N-1`` under a fresh header (version 0.2.5, ``seen`` = 0),
e.g. ``yolov4.conv.137`` to start training from. Arrays are written in the standard layout (a transposing
header's connected weights untransposed, as Darknet writes them); ``flipped`` convolutions are written back
flipped, so the file reloads with the same cfg (Darknet writes its in-memory layout there).
``--cfg-out FILE`` also writes the cfg truncated to the same N layers (the cfg the file is complete for).
"""
from __future__ import annotations

import os
import sys
import warnings

from .cfgedit import truncate
from .errors import DarknetError, WeightsError
from .fileio import atomic_write, read_cfg_file_text


def partial(cfg, weights, out, n: int, cfg_out=None) -> int:
    """Write the first ``n`` layers' arrays of ``weights`` (for ``cfg``) to ``out``; returns the floats written."""
    from .model import Darknet
    from .weights import DEFAULT_HEADER, Header, WarningLoad, save_weights
    net = Darknet.from_cfg(cfg, warn=False)
    layers = net.graph.layers
    if n < 1:
        raise DarknetError(f"N = {n}: must be at least 1")
    n = min(n, len(layers))
    need = sum(l.weights_floats for l in layers[:n])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WarningLoad)      # a full-length file is the normal input
        net.load_weights(weights, partial=True)
    short = [l for l in layers[net.layers_loaded:n] if l.weights_floats]
    if short:
        raise WeightsError(f"holds complete arrays for layers 0-{net.layers_loaded - 1} only; the first {n} layers "
                           f"need them up to layer {short[-1].index} ({short[-1].where})", weights)
    fresh = Header.parse(DEFAULT_HEADER, os.fspath(out))
    save_weights(net, out, header=fresh, upto=n)
    if cfg_out:
        text = truncate(read_cfg_file_text(cfg), n)
        atomic_write(cfg_out, lambda f: f.write(text.encode("utf-8", errors="surrogateescape")), "cfg")
    return need


def add_arguments(parser):
    parser.add_argument("cfg", help="Darknet .cfg file the weights belong to")
    parser.add_argument("weights", help="Darknet .weights file")
    parser.add_argument("out", help="output .weights file (e.g. yolov4.conv.137)")
    parser.add_argument("n", type=int, metavar="N", help="number of leading layers to keep")
    parser.add_argument("--cfg-out", metavar="FILE", help="also write the cfg truncated to the N layers")


def run(args) -> int:
    floats = partial(args.cfg, args.weights, args.out, args.n, args.cfg_out)
    print(f"darknet-prn partial: layers 0-{args.n - 1}: {floats:,} floats -> {args.out}"
          + (f" (cfg: {args.cfg_out})" if args.cfg_out else ""), file=sys.stderr)
    return 0
