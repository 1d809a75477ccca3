"""``darknet-prn export``: a Darknet model (cfg + .weights) as an ONNX file.

The graph is traced (``torch.onnx.export(..., dynamo=False)``) from an *export copy* of the network
(``copy.deepcopy``; the network passed in is not changed): batch norm folded into the convolutions and
``[connected]`` layers (``fuse=True``; the per-filter factor in float64 as Darknet's ``fuse_conv_batchnorm``),
the layers replaced by export forms with static shapes (the batch is the only dynamic dimension) and only
standard ONNX operators: Conv/MaxPool with Darknet's asymmetric padding as ``pads`` attributes, nearest
``Resize`` for ``[upsample]``, XNOR/binary weights binarized into constants, mish = ``x·tanh(softplus(x))``,
swish = ``x·sigmoid(x)``, hard_mish = ``x·clip(x+2, 0, 2)/2``, elu/selu with ``exp(x) − 1``. The few remaining
types (``[local]``, ``[normalization]``, ``maxpool_depth``, ``[local_avgpool]``, ``[detection]``,
``[implicit]``, ...) are traced from their ``darknet_prn.modules`` implementation. No custom
operators, no ONNX-domain extensions; opsets 11..20 (``MIN_OPSET``..``MAX_OPSET``).

Outputs
-------
* default: input ``images`` float32 (N, C, H, W) in [0, 1]; one output per network output layer (every
  ``[yolo]``, ``[Gaussian_yolo]``, ``[region]``, ``[detection]`` head, else the last non-``[cost]`` layer), named
  ``<type>_<index>`` (``yolo_16``, ``softmax_77``), holding exactly what ``Darknet.layer_outputs`` gives for that
  layer (same shape).
* ``decode=True``: a single output ``detections`` (N, boxes, 4 + 1 + classes), see :class:`Decode`.
* ``nms=True`` (implies ``decode``): also ``selected_indices`` (K, 3) int64 ``[batch, class, box]`` from ONNX
  ``NonMaxSuppression`` (per class, IoU > ``iou_thresh`` suppresses, scores > ``conf_thresh`` kept, as Darknet's
  ``do_nms_sort``); the score of a selection is ``detections[batch, box, 5 + class]``.

Decoded layout (``detections[n, b]``)
-------------------------------------
``cx, cy, w, h`` box centre and size in *network input pixels* (the ``images`` tensor; undo a letterbox or a
resize to map them onto the original image), then ``objectness``, then one *class probability* per class, which
is Darknet's ``det.prob[j]`` before its threshold:

===================  ===========================  ===============================================
head                 objectness                   class probability j
===================  ===========================  ===============================================
``[yolo]``           obj (logistic)               obj · cls_j
``[Gaussian_yolo]``  obj                          obj · cls_j · (1 − (σx + σy + σw + σh)/4)
``[region]``         σ(obj) (Darknet: 1)          σ(obj) · cls_j (classes after softmax)
``[detection]``      box confidence               confidence · cls_j of the cell
===================  ===========================  ===============================================

Boxes as ``get_yolo_detections`` / ``get_gaussian_yolo_detections`` / ``get_region_boxes`` /
``get_detection_detections`` compute them, times the input size: ``cx = (col + x)/lw · W``,
``w = exp(tw)·anchor_w/W · W`` (``new_coords=1``: ``tw²·4·anchor_w``; region: ``x = σ(tx)``,
``w = exp(tw)·anchor_w/lw · W``; detection: ``w = tw·W``, ``tw²·W`` with ``sqrt=1``), Gaussian ``yolo_point``
offsets applied; no letterbox correction (``correct_yolo_boxes`` needs the original image size). Rows follow
Darknet's detection order: heads in layer order, inside a head cells row-major, then anchors (all of them: no
threshold in the graph). Darknet keeps a (row, class) when ``prob > thresh``; for ``[yolo]``/``[Gaussian_yolo]``
it first drops rows with ``objectness <= thresh``, which changes nothing since there prob ≤ objectness. So
"(row, class) with prob > thresh" are exactly Darknet's candidates, and ``darknet_prn.postprocess`` decodes the
same values (relative boxes: divide by W, H).
"""
from __future__ import annotations

import copy
import inspect
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__, geometry
from .activations import onnx_activate as export_activate
from .engines import ort_session
from .errors import DarknetError
from .fileio import atomic_path, check_output
from .graph import HEAD_TYPES, STATEFUL_TYPES
from .heads import layout_of
from .modules import (BN_EPS, add_leading, add_sources, binary_weights, blur_kernel, fold_bn, route_inputs,
                      softmax_tree, xnor_inputs, xnor_weights)
from .registry import Registry

MIN_OPSET = 11


def _max_opset() -> int:
    """The highest opset the TorchScript-based torch.onnx exporter writes (20 for torch 2.5 .. 2.13)."""
    try:
        from torch.onnx import _constants as c
        return int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or min(20, c.ONNX_MAX_OPSET))
    except Exception:  # noqa: BLE001 -- private module; be conservative
        return 17


MAX_OPSET = _max_opset()
DEFAULT_OPSET = min(17, MAX_OPSET)
DEFAULT_CONF_THRESH = 0.25    # darknet detector test -thresh
DEFAULT_IOU_THRESH = 0.45     # darknet detector test nms
INPUT_NAME = "images"
PROTOBUF_LIMIT = 2 * 1024 ** 3

__all__ = ["export_onnx", "ExportResult", "Decode", "decode_heads"]


# ----------------------------------------------------------------------------------------------------
# ONNX ops the tracer cannot express directly
# ----------------------------------------------------------------------------------------------------
class _MaxPoolPads(torch.autograd.Function):
    """MaxPool with asymmetric ``pads`` (padded cells ignored, as Darknet's -FLT_MAX window positions)."""

    @staticmethod
    def forward(ctx, x, size, stride, pads):
        t, l, b, r = pads
        if any(pads):
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
        return F.max_pool2d(x, size, stride)

    @staticmethod
    def symbolic(g, x, size, stride, pads):
        t, l, b, r = pads
        return g.op("MaxPool", x, kernel_shape_i=[size, size], strides_i=list(stride), pads_i=[t, l, b, r])


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX NonMaxSuppression; the PyTorch side is only a placeholder for tracing (see :func:`nms_reference`)."""

    @staticmethod
    def forward(ctx, boxes, scores, max_out, iou, score):
        return torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou, score):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([score], dtype=torch.float32)),
                    center_point_box_i=1)


# ----------------------------------------------------------------------------------------------------
# export forms of the common layers (static shapes; batch is the only dynamic dimension)
# ----------------------------------------------------------------------------------------------------
# layer type -> export form ``form(layer, module, fuse) -> nn.Module`` (a class, or a function that may return
# None); a type without one, or None, is traced from its reference module (_Fallback)
EXPORT_FORMS = Registry("ONNX export forms")
export_form = EXPORT_FORMS.register


class _Fallback(nn.Module):
    """A layer traced from its darknet_prn.modules implementation."""

    def __init__(self, module):
        super().__init__()
        self.m = module

    def forward(self, x, outs):
        return self.m(x, outs)


def _f32(t):
    # the export copy's own tensors: no clone needed
    return t.detach().to(torch.float32).contiguous()


class _Blur(nn.Module):
    """Darknet's anti-aliasing blur (modules.blur) with its depthwise kernel as a constant."""

    def __init__(self, c, size, pad, stride):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(c, size).contiguous())
        self.pad, self.stride, self.c = pad, tuple(stride), c

    def forward(self, x):
        return F.conv2d(x, self.kernel, None, self.stride, self.pad, 1, self.c)


class _ConvForm(nn.Module):
    """What the convolution forms share: Darknet's windows as torch's symmetric padding plus the far-side extra
    and the crop (``geometry.symmetric``), then the activation and the anti-aliasing blur."""

    def __init__(self, layer, m):
        super().__init__()
        p = layer.p
        self.act = m.act
        self.stride = (p["stride_y"], p["stride_x"])
        self.dilation, self.groups = p["dilation"], p["groups"]
        self.out_hw = p["conv_out"]
        # torch's symmetric padding gives the rows Darknet computes (window starts at -pad); pad the far side
        # when Darknet needs more rows (only with dilation), crop when torch gives more
        (self.pad, _), (eb, er) = geometry.symmetric(p["pads"])
        self.extra = (0, er, 0, eb)
        self.aa = _Blur(p["filters"], p["blur_size"], p["blur_pad"], p["blur_stride"]) if p["antialiasing"] \
            else None

    def _conv(self, x, bias, pad):
        if any(self.extra):
            x = F.pad(x, self.extra)
        y = F.conv2d(x, self.weight, bias, self.stride, pad, self.dilation, self.groups)
        oh, ow = self.out_hw
        if y.shape[2] != oh or y.shape[3] != ow:
            y = y[:, :, :oh, :ow]
        return y

    def _finish(self, y):
        y = export_activate(y, self.act)
        return self.aa(y) if self.aa is not None else y


class _Conv(_ConvForm):
    def __init__(self, layer, m, fuse):
        super().__init__(layer, m)
        p = layer.p
        w, b, scale, mean, var = (t.detach() if t is not None else None for t in m.tensors())
        w = w.float()
        if p["binary"]:
            w = binary_weights(w)
        self.bn = bool(p["bn"]) and not fuse
        if p["bn"] and fuse:
            # network.c fuse_conv_batchnorm: the factor in double precision
            w, b = fold_bn(w, b, scale, mean, var)
        self.register_buffer("weight", _f32(w))
        self.register_buffer("bias", _f32(b))
        if self.bn:
            self.register_buffer("scale", _f32(scale))
            self.register_buffer("mean", _f32(mean))
            self.register_buffer("var", _f32(var))

    def forward(self, x, outs=None):
        y = self._conv(x, None if self.bn else self.bias, self.pad)
        if self.bn:
            y = F.batch_norm(y, self.mean, self.var, self.scale, self.bias, False, 0.0, BN_EPS)
        return self._finish(y)


class _XnorConv(_ConvForm):
    """XNOR conv as Darknet's detector runs it (modules.Convolutional._xnor): BN folded into the float weights,
    weights binarized to ±mean|W'| per filter, inputs to ±1 with -1 padding; the binarized weights are
    constants here."""

    def __init__(self, layer, m, fuse=True):
        super().__init__(layer, m)
        # the same float32 arithmetic as the module, so every sign decision is identical
        wb, b = xnor_weights(*(t.detach().float() if t is not None else None for t in m.tensors()))
        self.register_buffer("weight", _f32(wb))
        self.register_buffer("bias", _f32(b))

    def forward(self, x, outs=None):
        xb = xnor_inputs(x)
        P = self.pad
        if P:
            xb = F.pad(xb, (P, P, P, P), value=-1.0)
        return self._finish(self._conv(xb, self.bias, 0))


class _MaxPool(nn.Module):
    def __init__(self, layer, m=None, fuse=True):
        super().__init__()
        p = layer.p
        self.size = p["size"]
        self.stride = (p["stride_y"], p["stride_x"])
        self.out_hw = p["pool_out"]
        self.pads = p["pads"]
        self.aa = _Blur(layer.in_shape[0], p["blur_size"], p["blur_pad"], p["blur_stride"]) \
            if p["antialiasing"] else None

    @staticmethod
    def supported(layer):
        p = layer.p
        return not p["maxpool_depth"] and 0 <= p["pads"][0] < p["size"] and all(v < p["size"] for v in p["pads"])

    def forward(self, x, outs=None):
        t, l, b, r = self.pads
        if t == b and l == r and 2 * max(t, l) <= self.size:
            y = F.max_pool2d(x, self.size, self.stride, (t, l))
        else:
            y = _MaxPoolPads.apply(x, self.size, self.stride, self.pads)
        oh, ow = self.out_hw
        if y.shape[2] != oh or y.shape[3] != ow:
            y = y[:, :, :oh, :ow]
        if self.aa:
            y = self.aa(y)
        return y


@export_form("route")
class _Route(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()
        self.slices, self.groups = layer.p["slices"], layer.p["groups"]

    def forward(self, x, outs):
        ts = route_inputs(outs, self.slices, self.groups)
        return ts[0] if len(ts) == 1 else torch.cat(ts, 1)


class _Shortcut(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()
        p = layer.p
        self.refs, self.channels, self.act = list(layer.refs), list(p["channels"]), p["activation"]
        self.weighted = p.get("weights_type", "none") != "none"
        if self.weighted:
            with torch.no_grad():
                w = m._weights(m.weights.detach().float())
            shape = (-1, 1, 1) if w.dim() == 2 else (1,)
            for k in range(w.shape[0]):
                self.register_buffer(f"w{k}", _f32(w[k].reshape(shape)))

    def forward(self, x, outs):
        if not self.weighted:
            y = add_sources(x, outs, self.refs, self.channels)
        else:
            y = x * self.w0
            for k, (i, c) in enumerate(zip(self.refs, self.channels), 1):
                wk = getattr(self, f"w{k}")
                f = outs[i][:, :c] * (wk[:c] if wk.dim() == 3 else wk)
                y = add_leading(y, f, c)
        return export_activate(y, self.act)


class _StridedShortcut(nn.Module):
    """pjreddie's shortcut_cpu (different w/h): ``out = alpha·out + beta·from`` on the positions the strides
    pair up (``from`` subsampled by ``stride``, spread over ``out`` by ``sample``), ``out`` elsewhere."""

    def __init__(self, layer, m, fuse):
        super().__init__()
        p = layer.p
        c, h, w = layer.in_shape
        self.ref, self.act, self.alpha, self.beta = layer.refs[0], p["activation"], p["alpha"], p["beta"]
        self.stride, self.sample, (self.mc, self.mh, self.mw) = p["strided_geometry"]
        self.c, self.h, self.w = c, h, w
        s = self.sample
        mask = torch.zeros((1, 1, h, w), dtype=torch.bool)
        mask[:, :, ::s, ::s][:, :, :self.mh, :self.mw] = True
        self.full = bool(mask.all())
        self.register_buffer("mask", mask)

    def forward(self, x, outs):
        f = outs[self.ref]
        st, s, mc, mh, mw = self.stride, self.sample, self.mc, self.mh, self.mw
        src = f[:, :mc, ::st, ::st] if st > 1 else f[:, :mc]
        src = src[:, :, :mh, :mw]
        if s > 1:      # zero-insertion spread onto the sample grid
            src = F.pad(src.reshape(-1, mc, mh, 1, mw, 1), (0, s - 1, 0, 0, 0, s - 1))
            src = src.reshape(-1, mc, mh * s, mw * s)
        pad_h, pad_w = self.h - src.shape[2], self.w - src.shape[3]
        if pad_h or pad_w:
            src = F.pad(src, (0, pad_w, 0, pad_h)) if pad_h >= 0 and pad_w >= 0 else src[:, :, :self.h, :self.w]
        xm = x[:, :mc] if mc < self.c else x
        y = xm * self.alpha + src * self.beta if self.alpha != 1 else xm + src * self.beta
        if not self.full:
            y = torch.where(self.mask, y, xm)
        if mc < self.c:
            y = torch.cat([y, x[:, mc:]], 1)
        return export_activate(y, self.act)


class _Upsample(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()
        self.stride, self.scale = layer.p["stride"], layer.p["scale"]

    def forward(self, x, outs=None):
        y = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return y * self.scale if self.scale != 1 else y


@export_form("softmax")
class _Softmax(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()
        p = layer.p
        self.inputs = int(math.prod(layer.in_shape))
        self.groups, self.t, self.spatial, self.tree = p["groups"], p["temperature"], p["spatial"], m.tree

    def forward(self, x, outs=None):
        if self.spatial:
            return torch.softmax(x / self.t if self.t != 1 else x, 1)
        flat = x.reshape(-1, self.inputs)
        if self.tree is not None:
            return softmax_tree(flat, self.tree, self.t).reshape(-1, self.inputs, 1, 1)
        v = flat.reshape(-1, self.groups, self.inputs // self.groups)
        y = torch.softmax(v / self.t if self.t != 1 else v, -1)
        return y.reshape(-1, self.inputs, 1, 1)


@export_form("connected")
class _Connected(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()
        p = layer.p
        self.inputs, self.outputs, self.act = p["inputs"], p["outputs"], p["activation"]
        w, b = m.weights.detach(), m.biases.detach()
        self.bn = bool(p["bn"]) and not fuse
        if p["bn"] and fuse:
            w, b = fold_bn(w, b, m.scales.detach(), m.rolling_mean.detach(), m.rolling_variance.detach())
        self.register_buffer("weight", _f32(w))
        self.register_buffer("bias", _f32(b))
        if self.bn:
            self.register_buffer("scale", _f32(m.scales))
            self.register_buffer("mean", _f32(m.rolling_mean))
            self.register_buffer("var", _f32(m.rolling_variance))

    def forward(self, x, outs=None):
        x = x.reshape(-1, self.inputs)
        if self.bn:
            y = F.linear(x, self.weight)
            y = (y - self.mean) * (self.scale / torch.sqrt(self.var + BN_EPS)) + self.bias
        else:
            y = F.linear(x, self.weight, self.bias)
        return export_activate(y, self.act).reshape(-1, self.outputs, 1, 1)


@export_form("batchnorm")
class _BatchNorm(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()
        for name, src in (("bias", m.biases), ("scale", m.scales), ("mean", m.rolling_mean),
                          ("var", m.rolling_variance)):
            self.register_buffer(name, _f32(src))

    def forward(self, x, outs=None):
        return F.batch_norm(x, self.mean, self.var, self.scale, self.bias, False, 0.0, BN_EPS)


@export_form("activation", "scale_channels", "sam", "partial_shortcut", "dropout", "empty")
class _Act(nn.Module):
    """[activation], [scale_channels], [sam], [partial_shortcut], [dropout], [empty]."""

    def __init__(self, layer, m, fuse):
        super().__init__()
        self.type, self.refs = layer.type, list(layer.refs)
        self.act = layer.p.get("activation", "linear")
        self.channels = list(layer.p.get("channels", ()))

    def forward(self, x, outs=None):
        if self.type in ("scale_channels", "sam"):
            x = outs[self.refs[0]] * x
        elif self.type == "partial_shortcut":
            x = add_sources(x, outs, self.refs, self.channels)
        return export_activate(x, self.act)


@export_form("avgpool")
class _AvgPool(nn.Module):
    def __init__(self, layer, m, fuse):
        super().__init__()

    def forward(self, x, outs=None):
        return F.adaptive_avg_pool2d(x, 1)


@export_form("convolutional")
def _conv_form(layer, m, fuse):
    if layer.p["pads"][0] >= 0:                # a negative padding (a crop) is traced from the module
        return (_XnorConv if layer.p["xnor"] else _Conv)(layer, m, fuse)


@export_form("maxpool")
def _maxpool_form(layer, m, fuse):
    return _MaxPool(layer) if _MaxPool.supported(layer) else None


@export_form("shortcut")
def _shortcut_form(layer, m, fuse):
    return (_StridedShortcut if layer.p["strided"] else _Shortcut)(layer, m, fuse)


@export_form("upsample")
def _upsample_form(layer, m, fuse):
    return _Upsample(layer, m, fuse) if layer.p["stride"] > 0 else None


def _export_layer(layer, m, fuse):
    form = EXPORT_FORMS.get(layer.type)
    mod = form(layer, m, fuse) if form is not None else None
    return mod if mod is not None else _Fallback(m)


# ----------------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------------
def _head_classes(layer):
    return layer.p["classes"]


class Decode(nn.Module):
    """Darknet's detection decoding of the network heads (see the module docstring for the layout).

    ``Decode(graph)(heads)`` takes the head tensors in ``graph.output_layers`` order (as ``Darknet.forward``
    returns them) and gives (N, boxes, 4 + 1 + classes) float32."""

    def __init__(self, graph):
        super().__init__()
        self.net_w, self.net_h = float(graph.width), float(graph.height)
        heads = [graph.layers[i] for i in graph.output_layers]
        bad = [l for l in heads if l.type not in HEAD_TYPES]
        if bad or not heads:
            l = bad[0] if bad else graph.layers[-1]
            raise DarknetError(f"decoding needs detection heads ([yolo], [Gaussian_yolo], [region] or [detection]); "
                               f"this network's output is [{l.section.name}] layer {l.index}", graph.path)
        classes = {_head_classes(l) for l in heads}
        if len(classes) != 1:
            raise DarknetError(f"decoding needs one class count for all heads, got {sorted(classes)}", graph.path)
        self.classes = classes.pop()
        self.specs = []
        for k, l in enumerate(heads):
            p = l.p
            if l.type == "region" and (p["coords"] != 4 or p.get("tree") is not None):
                raise DarknetError(f"[region] layer {l.index}: decoding supports coords=4 without tree= "
                                   f"(YOLO9000 hierarchies are not decoded)", l.section.path, l.section.line)
            if l.type == "detection" and p["coords"] != 4:
                raise DarknetError(f"[detection] layer {l.index}: decoding supports coords=4", l.section.path,
                                   l.section.line)
            lay = layout_of(l.type, p)
            num = lay.anchors
            if l.type == "detection":
                lh = lw = p["side"]
                cells = torch.arange(lh * lw).repeat_interleave(num)
                aw = ah = torch.zeros(lh * lw * num)
            else:
                _, lh, lw = l.in_shape
                cells = torch.arange(lh * lw).repeat_interleave(num)
                a = torch.tensor(lay.anchor_wh, dtype=torch.float32).view(num, 2)
                aw, ah = a[:, 0].repeat(lh * lw), a[:, 1].repeat(lh * lw)
            self.register_buffer(f"col{k}", (cells % lw).float())
            self.register_buffer(f"row{k}", (cells // lw).float())
            self.register_buffer(f"aw{k}", aw.contiguous())
            self.register_buffer(f"ah{k}", ah.contiguous())
            self.specs.append(dict(type=l.type, index=l.index, lw=lw, lh=lh, num=num, shape=l.in_shape,
                                   new_coords=p.get("new_coords", 0), yolo_point=p.get("yolo_point", "center"),
                                   sqrt=p.get("sqrt", 0), per=lay.per, o=lay.offsets))

    @property
    def boxes(self) -> int:
        return sum(s["lw"] * s["lh"] * s["num"] for s in self.specs)

    def forward(self, heads):
        parts = []
        for k, (s, h) in enumerate(zip(self.specs, heads)):
            col, row = getattr(self, f"col{k}"), getattr(self, f"row{k}")
            aw, ah = getattr(self, f"aw{k}"), getattr(self, f"ah{k}")
            lw, lh, num, C = s["lw"], s["lh"], s["num"], self.classes
            h = h.float()
            o = s["o"]
            if s["type"] in ("yolo", "gaussian_yolo"):
                v = h.reshape(-1, num, s["per"], lh * lw).permute(0, 3, 1, 2).reshape(-1, lh * lw * num, s["per"])
            elif s["type"] == "region":
                v = h.reshape(-1, lh * lw * num, s["per"])
            if s["type"] != "detection":
                x, y, tw, th = v[..., o["x"]], v[..., o["y"]], v[..., o["w"]], v[..., o["h"]]
                obj, cls = v[..., o["obj"]], v[..., o["cls"]:]
            if s["type"] == "yolo":
                if s["new_coords"]:
                    bw, bh = tw * tw * 4 * aw, th * th * 4 * ah
                else:
                    bw, bh = torch.exp(tw) * aw, torch.exp(th) * ah
                cx, cy = (col + x) / lw * self.net_w, (row + y) / lh * self.net_h
                prob = obj.unsqueeze(-1) * cls
            elif s["type"] == "gaussian_yolo":
                bw, bh = torch.exp(tw) * aw, torch.exp(th) * ah
                cx, cy = (col + x) / lw * self.net_w, (row + y) / lh * self.net_h
                if s["yolo_point"] == "left_top":
                    cx, cy = cx + bw / 2, cy + bh / 2
                elif s["yolo_point"] == "right_bottom":
                    cx, cy = cx - bw / 2, cy - bh / 2
                uc = (v[..., o["sx"]] + v[..., o["sy"]] + v[..., o["sw"]] + v[..., o["sh"]]) / 4
                prob = obj.unsqueeze(-1) * cls * (1 - uc).unsqueeze(-1)
            elif s["type"] == "region":
                x, y = torch.sigmoid(x), torch.sigmoid(y)
                cx, cy = (col + x) / lw * self.net_w, (row + y) / lh * self.net_h
                bw, bh = torch.exp(tw) * aw / lw * self.net_w, torch.exp(th) * ah / lh * self.net_h
                prob = obj.unsqueeze(-1) * cls
            else:  # detection (YOLOv1): [cells][classes] probs, [cells][num] confidences, [cells][num][4] boxes
                cells = lw * lh
                cls = h[:, o["cls"]:o["cls"] + cells * C].reshape(-1, cells, 1, C).expand(-1, cells, num, C) \
                    .reshape(-1, cells * num, C)
                obj = h[:, o["obj"]:o["obj"] + cells * num].reshape(-1, cells * num)
                b = h[:, o["box"]:o["box"] + cells * num * 4].reshape(-1, cells * num, 4)
                cx = (b[..., 0] + col) / lw * self.net_w
                cy = (b[..., 1] + row) / lh * self.net_h
                bw, bh = (b[..., 2] * b[..., 2], b[..., 3] * b[..., 3]) if s["sqrt"] else (b[..., 2], b[..., 3])
                bw, bh = bw * self.net_w, bh * self.net_h
                prob = obj.unsqueeze(-1) * cls
            parts.append(torch.cat([torch.stack([cx, cy, bw, bh, obj], -1), prob], -1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def decode_heads(net, heads) -> torch.Tensor:
    """Decode ``net(x)`` (the head tensors) the way the exported ``--decode`` graph does."""
    return Decode(net.graph).to(heads[0].device)(heads)


def nms_reference(detections, conf_thresh=DEFAULT_CONF_THRESH, iou_thresh=DEFAULT_IOU_THRESH):
    """Per batch item and class greedy NMS on decoded rows (numpy, for checking ``selected_indices``).

    Returns a set of (batch, class, box): Darknet's ``do_nms_sort`` survivors with ``prob > conf_thresh``."""
    import numpy as np
    d = np.asarray(detections, dtype=np.float64)
    keep = set()
    for n in range(d.shape[0]):
        box = d[n, :, :4]
        x1, y1 = box[:, 0] - box[:, 2] / 2, box[:, 1] - box[:, 3] / 2
        x2, y2 = box[:, 0] + box[:, 2] / 2, box[:, 1] + box[:, 3] / 2
        area = (x2 - x1) * (y2 - y1)
        for c in range(d.shape[2] - 5):
            s = d[n, :, 5 + c]
            idx = [i for i in np.argsort(-s, kind="stable") if s[i] > conf_thresh]
            alive = []
            for i in idx:
                ok = True
                for j in alive:
                    iw = max(0.0, min(x2[i], x2[j]) - max(x1[i], x1[j]))
                    ih = max(0.0, min(y2[i], y2[j]) - max(y1[i], y1[j]))
                    inter = iw * ih
                    union = area[i] + area[j] - inter
                    if union > 0 and inter / union > iou_thresh:
                        ok = False
                        break
                if ok:
                    alive.append(i)
                    keep.add((n, c, int(i)))
    return keep


# ----------------------------------------------------------------------------------------------------
# the traced module
# ----------------------------------------------------------------------------------------------------
class _ExportModel(nn.Module):
    def __init__(self, net, fuse=True, decode=False, nms=False, half=False, conf_thresh=DEFAULT_CONF_THRESH,
                 iou_thresh=DEFAULT_IOU_THRESH, outputs=None):
        super().__init__()
        graph = net.graph
        with torch.no_grad():
            self.layers = nn.ModuleList(_export_layer(l, m, fuse) for l, m in zip(graph.layers, net.layers))
        self.output_layers = list(graph.output_layers if outputs is None else outputs)
        needed = set(self.output_layers)
        for l in graph.layers:
            needed.update(l.refs)
        self.needed = needed
        self.half_ = half
        self.decode = Decode(graph) if decode else None
        self.nms = nms
        self.conf_thresh, self.iou_thresh = conf_thresh, iou_thresh

    def forward(self, x):
        if self.half_:
            x = x.half()
        outs = {}
        for i, m in enumerate(self.layers):
            x = m(x, outs)
            if i in self.needed:
                outs[i] = x
        heads = [outs[i] for i in self.output_layers]
        if self.half_:
            heads = [h.float() for h in heads]
        if self.decode is None:
            seen, res = set(), []
            for h in heads:                 # one tensor can be two layers' output (dropout, single route)
                res.append(torch.clone(h) if id(h) in seen else h)
                seen.add(id(h))
            self.traced_shapes = [tuple(int(v) for v in h.shape[1:]) for h in res]
            return tuple(res)
        det = self.decode(heads)
        if not self.nms:
            return det
        scores = det[..., 5:].transpose(1, 2)
        sel = _NonMaxSuppression.apply(det[..., :4], scores, self.decode.boxes, float(self.iou_thresh),
                                       float(self.conf_thresh))
        return det, sel


# ----------------------------------------------------------------------------------------------------
# export_onnx
# ----------------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: str
    opset: int
    inputs: list                       # [(name, shape)], a dynamic batch shows as "batch"
    outputs: list                      # [(name, shape)]
    bytes: int = 0
    verified: bool = False
    max_abs_diff: float | None = None  # ONNX Runtime vs PyTorch, over all outputs compared
    diffs: dict = field(default_factory=dict)   # output name -> max abs difference
    note: str = ""                     # why verification was skipped
    warnings: list = field(default_factory=list)

    def summary(self) -> str:
        def shp(s):
            return "x".join(str(v) for v in s)
        lines = [f"wrote {self.path} ({self.bytes / 1e6:.1f} MB, opset {self.opset}): input "
                 + ", ".join(f"{n} {shp(s)}" for n, s in self.inputs) + "; outputs "
                 + ", ".join(f"{n} {shp(s)}" for n, s in self.outputs)]
        if self.verified:
            import onnxruntime
            lines.append(f"verified with ONNX Runtime {onnxruntime.__version__}: max abs difference vs PyTorch "
                         f"{self.max_abs_diff:.3g} (" + ", ".join(f"{k} {v:.3g}" for k, v in self.diffs.items()) + ")")
        elif self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _onnxruntime():
    try:
        import onnxruntime
        return onnxruntime
    except ImportError:
        return None


def _check_args(net, path, opset, batch, decode, nms, conf_thresh, iou_thresh):
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise DarknetError(f"opset {opset!r} is not supported: use an integer from {MIN_OPSET} to {MAX_OPSET}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise DarknetError(f"batch must be a positive integer, got {batch!r}")
    if not (0 <= conf_thresh < 1) or not (0 <= iou_thresh <= 1):
        raise DarknetError(f"thresholds must be in [0, 1): conf_thresh={conf_thresh}, iou_thresh={iou_thresh}")
    for l in net.graph.layers:
        if l.type in STATEFUL_TYPES:
            raise DarknetError(f"[{l.section.name}] layer {l.index} cannot be exported to ONNX (recurrent layers keep "
                               f"state between calls; [history] does not run)", l.section.path, l.section.line)
    if decode or nms:
        Decode(net.graph)      # raises for classifier nets and undecodable heads
    return check_output(path, "the ONNX file")[0]


def export_onnx(net, path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, decode: bool = False,
                nms: bool = False, fuse: bool = True, half: bool = False, verify: bool | None = None, *,
                batch: int = 1, conf_thresh: float = DEFAULT_CONF_THRESH, iou_thresh: float = DEFAULT_IOU_THRESH,
                verify_tol: float | None = None, outputs=None, metadata: dict | None = None) -> ExportResult:
    """Write ``net`` (a :class:`darknet_prn.Darknet`) to ``path`` as ONNX; returns an :class:`ExportResult`.

    opset: ONNX opset, ``MIN_OPSET``..``MAX_OPSET``. dynamic_batch: symbolic batch dimension (else ``batch``).
    decode: single ``detections`` output (see the module docstring). nms: adds ``selected_indices`` from ONNX
    NonMaxSuppression (implies decode; ``conf_thresh``/``iou_thresh``, Darknet's detector-test defaults .25/.45).
    outputs: layer indices to expose instead of the network outputs (e.g. ``range(len(net.graph.layers))``
    for every layer), each named ``<type>_<index>``; not with decode.
    fuse: fold batch norm into the convolutions (and [connected] layers); else ONNX BatchNormalization.
    half: float16 weights and activations inside the graph (input and outputs stay float32).
    verify: run the file with ONNX Runtime against PyTorch (``None``: when onnxruntime is importable); an
    output differing by more than ``verify_tol`` (relative to the output's largest magnitude, default 1e-3,
    5e-2 with half) fails the export. The write is atomic: on any error nothing is left at ``path`` (an existing
    file there stays as it was). Raises :class:`DarknetError` with a one-line message on bad input."""
    try:
        import onnx
    except ImportError:
        raise DarknetError("ONNX export needs the onnx package: pip install onnx onnxruntime "
                           "(or pip install 'darknet-prn[onnx]')") from None
    nms = bool(nms)
    decode = bool(decode) or nms
    path = _check_args(net, path, opset, batch, decode, nms, conf_thresh, iou_thresh)
    n_layers = len(net.graph.layers)
    if outputs is not None:
        if decode:
            raise DarknetError("outputs= (layer outputs) and decode/nms exclude each other")
        try:
            outputs = [int(i) for i in outputs]
        except (TypeError, ValueError):
            raise DarknetError(f"outputs must be layer indices, got {outputs!r}") from None
        bad = [i for i in outputs if not 0 <= i < n_layers]
        if bad or not outputs or len(set(outputs)) != len(outputs):
            raise DarknetError(f"outputs must be distinct layer indices 0..{n_layers - 1}, got {outputs}")
    ort = _onnxruntime()
    if verify and ort is None:
        raise DarknetError("--verify needs onnxruntime: pip install onnxruntime")
    do_verify = ort is not None if verify is None else bool(verify)
    graph = net.graph
    result = ExportResult(path=path, opset=opset, inputs=[], outputs=[])
    if nms:
        kinds = {graph.layers[i].p.get("nms_kind", "default") for i in graph.output_layers}
        if kinds - {"default"}:
            result.warnings.append(f"the cfg asks for nms_kind={'/'.join(sorted(kinds - {'default'}))} (DIoU-NMS); "
                                   f"ONNX NonMaxSuppression does plain IoU NMS")
    nbytes = sum(t.numel() for t in net.state_dict().values()) * (2 if half else 4)
    if nbytes > PROTOBUF_LIMIT - (64 << 20):
        raise DarknetError(f"the model has {nbytes / 2**30:.1f} GiB of weights, more than one ONNX file can hold "
                           f"(2 GiB protobuf limit)")

    # -- the export copy --------------------------------------------------------------------------------
    plan = getattr(net, "_fast_plan", None)          # Darknet's cached inference plan: not copied
    xnet = copy.deepcopy(net, {id(plan): None} if plan is not None else {}).cpu().float().eval()
    for prm in xnet.parameters():
        prm.requires_grad_(False)
    model = _ExportModel(xnet, fuse=fuse, decode=decode, nms=nms, half=half, conf_thresh=conf_thresh,
                         iou_thresh=iou_thresh, outputs=outputs).eval()
    if half:
        model.layers.half()
    del xnet

    head_names = head_output_names(graph, model.output_layers)
    out_names = (["detections", "selected_indices"] if nms else ["detections"]) if decode else head_names
    in_shape = tuple(graph.input_shape)
    gen = torch.Generator().manual_seed(0)
    trace_batch = 1 if dynamic_batch else batch
    example = torch.rand((trace_batch,) + in_shape, generator=gen)
    dyn = None
    if dynamic_batch:
        dyn = {INPUT_NAME: {0: "batch"}}
        for n in out_names:
            dyn[n] = {0: "num_selected"} if n == "selected_indices" else {0: "batch"}

    with atomic_path(path, "the ONNX file", durable=True) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                buf = io.BytesIO()
                extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
                torch.onnx.export(model, (example,), buf, **extra, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=out_names, dynamic_axes=dyn,
                                  do_constant_folding=True, export_params=True,
                                  training=torch.onnx.TrainingMode.PRESERVE)
        except DarknetError:
            raise
        except OSError as e:
            raise DarknetError(f"cannot write the ONNX file: {e.strerror or e}", path) from None
        except Exception as e:  # noqa: BLE001 -- the exporter's own errors become one line
            msg = " ".join(str(e).split("\n")[0].split())
            raise DarknetError(f"ONNX export failed: {type(e).__name__}: {msg[:300]}") from e

        m = onnx.ModelProto()
        m.ParseFromString(buf.getvalue())
        del buf
        m.producer_name, m.producer_version = "darknet-prn", __version__
        m.doc_string = (f"Darknet model {os.path.basename(graph.path)} exported by darknet-prn {__version__}. "
                        f"Input {INPUT_NAME}: float32 (N, C, H, W) in [0, 1], RGB. "
                        + ("Output detections: (N, boxes, 4+1+classes) = cx, cy, w, h (input pixels), "
                           "objectness, class probabilities (objectness * class)." if decode else
                           "Outputs: the head layers' outputs as darknet-prn's layer_outputs gives them."))
        props = {"darknet_prn.cfg": os.path.basename(graph.path), "darknet_prn.width": str(graph.width),
                 "darknet_prn.height": str(graph.height), "darknet_prn.channels": str(graph.channels),
                 "darknet_prn.letter_box": str(graph.net.get("letter_box", 0)),
                 "darknet_prn.fused_bn": str(int(bool(fuse))), "darknet_prn.half": str(int(bool(half))),
                 "darknet_prn.heads": json.dumps([_head_meta(graph.layers[i]) for i in graph.output_layers])}
        if decode:
            props["darknet_prn.decode"] = "cx,cy,w,h,objectness,class_probs(objectness*class)"
        if nms:
            props["darknet_prn.nms"] = json.dumps({"conf_thresh": conf_thresh, "iou_thresh": iou_thresh})
        props.update({str(k): str(v) for k, v in (metadata or {}).items()})
        # state the output shapes (the tracer's symbolic shape inference can leave or even merge symbolic
        # spatial dimensions when the batch is dynamic) and drop its intermediate annotations
        bdim = "batch" if dynamic_batch else batch
        shapes = [(bdim, model.decode.boxes, 5 + model.decode.classes)] if decode else \
            [(bdim,) + s for s in model.traced_shapes]
        for o, shape in zip(m.graph.output, shapes):
            o.type.tensor_type.ClearField("shape")
            for v in shape:
                d = o.type.tensor_type.shape.dim.add()
                if isinstance(v, str):
                    d.dim_param = v
                else:
                    d.dim_value = v
        del m.graph.value_info[:]
        del m.metadata_props[:]
        for k, v in props.items():
            e = m.metadata_props.add()
            e.key, e.value = k, v
        with open(tmp, "wb") as f:
            f.write(m.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except Exception as e:  # noqa: BLE001
            raise DarknetError(f"the exported graph fails onnx.checker: {' '.join(str(e).split())[:300]}") from e

        def dims(vi):
            return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        result.inputs = [(i.name, dims(i)) for i in m.graph.input]
        result.outputs = [(o.name, dims(o)) for o in m.graph.output]
        del m

        if do_verify:
            _verify(net, tmp, result, decode, nms, half, dynamic_batch, batch, in_shape, verify_tol, outputs)
        elif ort is None and verify is None:
            result.note = "not verified: onnxruntime is not installed (pip install onnxruntime)"
        else:
            result.note = "not verified (--no-verify)"
    result.bytes = os.path.getsize(path)
    return result


def _head_meta(l):
    keep = ("classes", "mask", "anchors", "num", "scale_x_y", "new_coords", "nms_kind", "beta_nms", "coords",
            "softmax", "side", "sqrt", "yolo_point", "groups")
    meta = {"index": l.index, "type": l.type, "shape": list(l.out_shape)}
    meta.update({k: l.p[k] for k in keep if k in l.p})
    return meta


def _verify(net, path, result, decode, nms, half, dynamic_batch, batch, in_shape, tol, outputs):
    import numpy as np
    try:
        sess = ort_session(path)
    except DarknetError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DarknetError(f"ONNX Runtime cannot load the exported file: {' '.join(str(e).split())[:300]}") from e
    tol = tol if tol is not None else (5e-2 if half else 1e-3)
    batches = [1, 3] if dynamic_batch else [batch]
    gen = torch.Generator().manual_seed(1)
    dev = next((t.device for t in net.state_dict().values()), torch.device("cpu"))
    names = [o.name for o in sess.get_outputs()]
    worst = {}
    for b in batches:
        x = torch.rand((b,) + in_shape, generator=gen)
        with torch.no_grad():
            if outputs is not None:
                every = net.layer_outputs(x.to(dev))
                ref = [every[i].float() for i in outputs]
            else:
                ref = [h.float() for h in net(x.to(dev))]
            if decode:
                ref = [decode_heads(net, ref)]
        ref = [r.detach().cpu().numpy() for r in ref]
        try:
            got = sess.run(None, {INPUT_NAME: x.numpy()})
        except Exception as e:  # noqa: BLE001
            raise DarknetError(f"ONNX Runtime failed to run the exported file: {' '.join(str(e).split())[:300]}") \
                from e
        if nms:
            sel = got[1]
            if sel.ndim != 2 or sel.shape[1] != 3:
                raise DarknetError(f"verification failed: selected_indices has shape {sel.shape}")
        for name, r, g in zip(names, ref, got):
            if g.shape != r.shape:
                raise DarknetError(f"verification failed: {name} has shape {g.shape}, PyTorch {r.shape}")
            if not np.isfinite(g).all() and not np.array_equal(np.isfinite(g), np.isfinite(r)):
                raise DarknetError(f"verification failed: {name} has non-finite values where PyTorch has none")
            fin = np.isfinite(r) & np.isfinite(g)
            d = float(np.max(np.abs(g[fin].astype(np.float64) - r[fin]))) if fin.any() else 0.0
            scale = max(1.0, float(np.max(np.abs(r[fin]))) if fin.any() else 1.0)
            worst[name] = max(worst.get(name, 0.0), d)
            if not d <= tol * scale:
                raise DarknetError(f"verification failed: {name} differs from PyTorch by {d:.3g} "
                                   f"(> {tol:g} x {scale:.3g})")
    result.verified = True
    result.diffs = worst
    result.max_abs_diff = max(worst.values()) if worst else 0.0


def head_output_names(graph, output_layers) -> list:
    """The ONNX output name of each network output layer: ``<type>_<index>`` (e.g. ``yolo_16``)."""
    return [f"{graph.layers[i].type}_{i}" for i in output_layers]


def check_onnx_heads(net, path) -> str:
    """``path`` if it is an ONNX model of ``net``'s export layout (input ``images`` with the network's C, H, W; one
    head output per network output, same names), else a one-line DarknetError naming the file."""
    try:
        import onnx
    except ImportError:
        raise DarknetError("running an ONNX model needs: pip install onnx", path) from None
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DarknetError("ONNX model not found", path)
    try:
        m = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 -- any decoding failure is a bad file
        raise DarknetError(f"not an ONNX model ({type(e).__name__})", path) from None
    want = head_output_names(net.graph, net.output_layers)
    got = [o.name for o in m.graph.output]
    if got != want:
        raise DarknetError(f"outputs {got} are not this cfg's heads {want} (export without --decode/--nms)", path)
    ins = [i for i in m.graph.input if i.name == INPUT_NAME]
    dims = [d.dim_value for d in ins[0].type.tensor_type.shape.dim][1:] if ins else []
    if dims != list(net.graph.input_shape):
        raise DarknetError(f"input '{INPUT_NAME}' of shape (N, {', '.join(map(str, net.graph.input_shape))}) "
                           f"expected; the model has {[i.name for i in m.graph.input]} {dims}", path)
    return path
