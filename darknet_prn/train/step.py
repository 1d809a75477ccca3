"""``Darknet.loss``: one training forward (Darknet's ``forward_network`` with ``state.train``) and the losses of
its loss layers, summed."""
from __future__ import annotations

import sys

import numpy as np
import torch

from ..errors import DarknetError
from . import heads
from .truth import classifier_truth, detection_truth


def _truth_for(net, truth, batch: int) -> np.ndarray:
    layers = net.graph.layers
    yolo = [l for l in layers if l.type in heads.DETECTION_HEADS]
    if yolo:
        return detection_truth(truth, batch, max(l.section.get_int("max", 200) for l in yolo))
    first = next(l for l in layers if l.type in ("softmax", "cost"))
    return classifier_truth(truth, batch, int(np.prod(first.in_shape)))


def frozen_layers(graph) -> set:
    """Layers before the last ``stopbackward=1``: built with ``params.train = 0`` (``parse_network_cfg``), so
    their forward is the inference one (``conv-frozen``) and ``update_network`` skips them."""
    last = max((l.index for l in graph.layers if l.section.get_int("stopbackward", 0) == 1), default=0)
    return set(range(last))


def stopped_layers(graph, iteration: int) -> list:
    """Layers whose backward does not run (``backward_network_gpu``: ``stopbackward == 1``, or ``stopbackward = N``
    while the iteration is below N): neither they nor any layer before them get gradients."""
    return [l.index for l in graph.layers
            if (lambda v: v == 1 or v > iteration)(l.section.get_int("stopbackward", 0))]


def _stop_backward(net, stop: list, frozen: set):
    """Forward hooks that cut the gradient at the stopped layers (their parameters and input get none) and
    put frozen layers in inference mode; returns an undo callable."""
    undo = []
    for i in frozen:
        m = net.layers[i]
        if m.training:
            m.eval()
            undo.append(m.train)
    if stop:
        last = max(stop)
        params = [p for i in range(last + 1) for p in net.layers[i].parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        undo.append(lambda: [p.requires_grad_(True) for p in params])
        h = net.layers[last].register_forward_pre_hook(lambda m, args: (args[0].detach(),) + tuple(args[1:]))
        undo.append(h.remove)
    return lambda: [u() for u in reversed(undo)]


def training_loss(net, x: torch.Tensor, truth, verbose: bool = False):
    if not net.layers.training:
        raise DarknetError("Darknet.loss needs training mode: call net.train() first")
    heads.check_trainable(net.graph)
    x = net._check_input(x)
    T = _truth_for(net, truth, x.shape[0])
    cost_modules = [m for l, m in zip(net.graph.layers, net.layers) if l.type == "cost"]
    for m in cost_modules:
        m.truth = T
    stop = [l for l in net.graph.layers if l.section.get_int("stopbackward", 0)]
    restore = None
    if stop:
        from .optim import images_per_update, net_section
        restore = _stop_backward(net, stopped_layers(net.graph, net.seen // images_per_update(net_section(net))),
                                 frozen_layers(net.graph))
    try:
        outs = net._run(x, keep_all=True)
    finally:
        for m in cost_modules:
            m.truth = None
        if restore:
            restore()
    terms, stats = [], []
    net_w, net_h = net.graph.width, net.graph.height
    for l in net.graph.layers:
        i = l.index
        if l.type == "yolo":
            t, st = heads.yolo_head(l, outs[i - 1], outs[i], T, net_w, net_h)
        elif l.type == "gaussian_yolo":
            t, st = heads.gaussian_head(l, outs[i - 1], outs[i], T, net_w, net_h)
        elif l.type == "region":
            # train_network_datum adds the mini-batch to seen before its forward
            t, st = heads.region_head(l, outs[i - 1], outs[i], T, net.seen + x.shape[0])
        elif l.type == "detection":
            t, st = heads.detection_head(l, outs[i - 1], outs[i], T)
        elif l.type == "softmax":
            if l.section.get_int("noloss", 0):
                continue
            t, st = heads.softmax_head(l, outs[i - 1], outs[i], T)
        elif l.type == "cost":
            t, st = heads.cost_head(l, outs[i - 1], T)
        else:
            continue
        terms.append(t)
        stats.append(st)
    loss = torch.stack(terms).sum()
    total = float(sum(s["cost"] for s in stats))
    res = {"heads": stats, "loss": total, "darknet_loss": total / len(stats) / x.shape[0]}
    if verbose:
        for s in stats:
            if "line" in s:
                print(s["line"], file=sys.stderr)
    return loss, res
