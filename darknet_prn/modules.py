"""Torch implementations of Darknet layers, one module class per layer type, looked up by ``BUILDERS``.

A module is built from a :class:`darknet_prn.graph.Layer`; the tensors it holds are exactly the layer's
``arrays`` (same names, with ``.`` -> ``_``, same shapes), so the weights codec and the module share that
one definition. ``forward(x, outs)`` gets the previous layer's output ``x`` and ``outs``, the outputs of
earlier layers (indexable by absolute layer index) for layers that read others (route, shortcut, ...).
Each module returns exactly what Darknet's ``l.output`` holds after its forward.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import activate
from .errors import CfgError
from .graph import Layer
from .registry import Registry

BN_EPS = 0.00001
BUILDERS = Registry("reference modules")      # layer type -> module class
register = BUILDERS.register


def attr_name(array_name: str) -> str:
    return array_name.replace(".", "_")


def _init_tensor(spec) -> torch.Tensor:
    kind, param = spec.init
    t = torch.empty(spec.shape, dtype=torch.float32)
    if kind == "weight":
        gain, fan_in = param.split("/")
        a = math.sqrt(int(gain) / max(1, int(fan_in)))
        return t.uniform_(-a, a)
    value = {"bias": 0.0, "scale": 1.0, "mean": 0.0, "var": 1.0}.get(kind, param)
    return t.fill_(float(value))


class DarknetModule(nn.Module):
    """Base: registers the layer's ``.weights`` arrays (parameters; BN running stats as buffers)."""

    def __init__(self, layer: Layer):
        super().__init__()
        self.index = layer.index
        self.type = layer.type
        self.refs = list(layer.refs)
        for spec in layer.arrays:
            t = _init_tensor(spec)
            if spec.running:
                self.register_buffer(attr_name(spec.name), t)
            else:
                self.register_parameter(attr_name(spec.name), nn.Parameter(t))

    def extra_repr(self):
        return f"index={self.index}"


def batchnorm(x, mean, var, scale, bias):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    inv = scale / torch.sqrt(var + BN_EPS)
    return (x - mean.view(shape)) * inv.view(shape) + bias.view(shape)


def _pad_to(x, pads, value=0.0):
    """F.pad with (left, right, top, bottom) that may be negative (crop)."""
    if any(pads):
        x = F.pad(x, pads, value=value)
    return x


def _window_pads(size_in, size_out, k, stride, left, dilation=1):
    need = (size_out - 1) * stride + dilation * (k - 1) + 1
    return left, need - size_in - left


def blur(x, size, pad, stride):
    """Darknet's fixed anti-aliasing blur (depthwise 3x3 [1 2 1]/16 outer product, or 2x2 of 1/4)."""
    c = x.shape[1]
    if size == 2:
        k = torch.full((2, 2), 0.25, dtype=x.dtype, device=x.device)
    else:
        v = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
        k = torch.outer(v, v) / 16
    w = k.expand(c, 1, size, size)
    oh = (x.shape[2] + 2 * pad - size) // stride[0] + 1
    ow = (x.shape[3] + 2 * pad - size) // stride[1] + 1
    y = F.conv2d(x, w, stride=stride, padding=pad, groups=c)
    return y[:, :, :oh, :ow]


@register("convolutional")
class Convolutional(DarknetModule):
    def __init__(self, layer: Layer):
        super().__init__(layer)
        p = layer.p
        self.p = p
        self.act = p["activation"]
        if p["xnor"] and p["bin_output"]:
            self.act = "linear"        # calculate_binary_weights switches bin_output layers to linear
        self.share = None              # set by the model for share_index (a module, not registered)
        self._fast = None

    def tensors(self):
        m = self.share[0] if self.share is not None else self
        bn = self.p["bn"]
        return (m.weights, m.biases, m.scales if bn else None, m.rolling_mean if bn else None,
                m.rolling_variance if bn else None)

    def conv(self, x, w, P=None):
        p = self.p
        d = p["dilation"]
        if P is None:
            P = p["padding"] * d
        oh, ow = p["conv_out"]
        k = p["size"]
        sy, sx = p["stride_y"], p["stride_x"]
        ty, by = _window_pads(x.shape[2], oh, k, sy, P, d)
        tx, bx = _window_pads(x.shape[3], ow, k, sx, P, d)
        if ty == by == tx == bx:
            y = F.conv2d(x, w, None, (sy, sx), P, d, p["groups"])
        else:
            y = F.conv2d(_pad_to(x, (tx, max(bx, 0), ty, max(by, 0))), w, None, (sy, sx), 0, d, p["groups"])
        if y.shape[2] != oh or y.shape[3] != ow:
            y = y[:, :, :oh, :ow]
        return y

    def forward(self, x, outs=None):
        p = self.p
        w, b, scale, mean, var = self.tensors()
        if p["xnor"]:
            y = self._xnor(x, w, b, scale, mean, var)
        else:
            if p["binary"]:
                w = torch.where(w > 0, 1.0, -1.0) * w.abs().mean(dim=(1, 2, 3), keepdim=True)
            y = self.conv(x, w)
            if p["bn"]:
                y = batchnorm(y, mean, var, scale, b)
            else:
                y = y + b.view(1, -1, 1, 1)
        y = activate(y, self.act)
        if p["antialiasing"]:
            y = blur(y, p["blur_size"], p["blur_pad"], p["blur_stride"])
        return y

    def _xnor(self, x, w, b, scale, mean, var):
        # Darknet runs XNOR convs only as detector test does: BN fused into the float weights, then
        # weights binarized to +-mean|W'| per filter and inputs to +-1 (padding reads as -1).
        if self.p["bn"]:
            inv = scale / torch.sqrt(var + BN_EPS)
            w = w * inv.view(-1, 1, 1, 1)
            b = b - mean * inv
        wb = torch.where(w > 0, 1.0, -1.0) * w.abs().mean(dim=(1, 2, 3), keepdim=True)
        xb = torch.where(x > 0, 1.0, -1.0)
        P = self.p["padding"] * self.p["dilation"]
        xb = F.pad(xb, (P, P, P, P), value=-1.0)
        return self.conv(xb, wb, P=0) + b.view(1, -1, 1, 1)


@register("local")
class Local(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p
        self.out_shape = layer.out_shape

    def forward(self, x, outs=None):
        p = self.p
        n, oh, ow = self.out_shape
        k, s, pad = p["size"], p["stride"], p["pad"]
        ty, by = _window_pads(x.shape[2], oh, k, s, pad)
        tx, bx = _window_pads(x.shape[3], ow, k, s, pad)
        xp = _pad_to(x, (tx, max(bx, 0), ty, max(by, 0)))
        cols = F.unfold(xp, k, stride=s)                                 # (N, c*k*k, L')
        lh = (xp.shape[2] - k) // s + 1
        lw = (xp.shape[3] - k) // s + 1
        cols = cols.view(x.shape[0], -1, lh, lw)[:, :, :oh, :ow].reshape(x.shape[0], -1, oh * ow)
        y = torch.einsum("lnk,bkl->bnl", self.weights, cols).reshape(x.shape[0], n, oh, ow)
        return activate(y + self.biases, p["activation"])


@register("connected")
class Connected(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p

    def forward(self, x, outs=None):
        y = F.linear(x.reshape(x.shape[0], -1), self.weights)
        if self.p["bn"]:     # Darknet normalises before adding the bias
            y = batchnorm(y, self.rolling_mean, self.rolling_variance, self.scales, self.biases)
        else:
            y = y + self.biases
        return activate(y, self.p["activation"]).view(x.shape[0], -1, 1, 1)


@register("maxpool")
class MaxPool(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p

    def forward(self, x, outs=None):
        p = self.p
        if p["maxpool_depth"]:
            oc = p["out_channels"]
            c = x.shape[1]
            k = -(-c // oc)
            if k * oc != c:
                x = F.pad(x, (0, 0, 0, 0, 0, k * oc - c), value=float("-inf"))
            return x.view(x.shape[0], k, oc, x.shape[2], x.shape[3]).amax(dim=1)
        oh, ow = p["pool_out"]
        size = p["size"]
        left = p["padding"] // 2
        ty, by = _window_pads(x.shape[2], oh, size, p["stride_y"], left)
        tx, bx = _window_pads(x.shape[3], ow, size, p["stride_x"], left)
        xp = _pad_to(x, (tx, max(bx, 0), ty, max(by, 0)), value=float("-inf"))
        y = F.max_pool2d(xp, size, (p["stride_y"], p["stride_x"]))
        y = y[:, :, :oh, :ow]
        if p["antialiasing"]:
            y = blur(y, p["blur_size"], p["blur_pad"], p["blur_stride"])
        return y


@register("local_avgpool")
class LocalAvgPool(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p

    def forward(self, x, outs=None):
        p = self.p
        oh, ow = p["pool_out"]
        size = p["size"]
        left = p["padding"] // 2
        ty, by = _window_pads(x.shape[2], oh, size, p["stride_y"], left)
        tx, bx = _window_pads(x.shape[3], ow, size, p["stride_x"], left)
        pads = (tx, max(bx, 0), ty, max(by, 0))
        ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        st = (p["stride_y"], p["stride_x"])
        s = F.avg_pool2d(_pad_to(x, pads), size, st, divisor_override=1)[:, :, :oh, :ow]
        n = F.avg_pool2d(_pad_to(ones, pads), size, st, divisor_override=1)[:, :, :oh, :ow]
        return s / n


@register("avgpool")
class AvgPool(DarknetModule):
    def forward(self, x, outs=None):
        return x.mean(dim=(2, 3), keepdim=True)


@register("route")
class Route(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.groups = layer.p["groups"]
        self.group_id = layer.p["group_id"]

    def forward(self, x, outs):
        parts = []
        for i in self.refs:
            t = outs[i]
            if self.groups > 1:
                c = t.shape[1] // self.groups
                t = t[:, c * self.group_id:c * (self.group_id + 1)]
            parts.append(t)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def add_leading(y, f, c):
    """y[:, :c] += f[:, :c] without in-place ops (keeps autograd and aliasing safe)."""
    if c >= y.shape[1] and f.shape[1] == y.shape[1]:
        return y + f
    if c >= y.shape[1]:
        return y + f[:, :c]
    return torch.cat([y[:, :c] + f[:, :c], y[:, c:]], 1)


@register("shortcut")
class Shortcut(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p

    def _weights(self, w):
        norm = self.p["weights_normalization"]
        if norm == "relu":
            r = F.relu(w)
            return r / (0.0001 + r.sum(0, keepdim=True))
        e = torch.exp(w - w.max(0, keepdim=True).values)
        return e / (0.0001 + e.sum(0, keepdim=True))

    def forward(self, x, outs):
        p = self.p
        if p["strided"]:
            return activate(self._strided(x, outs[self.refs[0]]), p["activation"])
        if p["weights_type"] == "none":
            y = x
            for i, c in zip(self.refs, p["channels"]):
                y = add_leading(y, outs[i], c)
        else:
            w = self._weights(self.weights)
            shape = (-1, 1, 1) if w.dim() == 2 else ()
            wk = [w[k].view(shape) if shape else w[k] for k in range(w.shape[0])]
            y = x * wk[0]
            for k, (i, c) in enumerate(zip(self.refs, p["channels"]), 1):
                f = outs[i][:, :c] * (wk[k][:c] if shape else wk[k])
                y = add_leading(y, f, c)
        return activate(y, p["activation"])

    def _strided(self, x, f):
        # pjreddie's shortcut_cpu: out = alpha*out + beta*from, from sampled with stride / spread by sample
        p = self.p
        _, c, h, w = x.shape
        fc, fh, fw = f.shape[1:]
        stride = max(1, fw // w)
        sample = max(1, w // fw)
        mc, mh, mw = min(c, fc), min(h, fh), min(w, fw)
        src = f[:, :mc, ::stride, ::stride][:, :, :mh, :mw]
        y = x.clone()
        region = y[:, :mc, ::sample, ::sample][:, :, :mh, :mw]
        region.copy_(p["alpha"] * region + p["beta"] * src)
        return y


@register("partial_shortcut")
class PartialShortcut(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.channels = layer.p["channels"]
        self.act = layer.p["activation"]

    def forward(self, x, outs):
        y = x
        for i, c in zip(self.refs, self.channels):
            y = add_leading(y, outs[i], c)
        return activate(y, self.act)


@register("scale_channels")
class ScaleChannels(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.act = layer.p["activation"]

    def forward(self, x, outs):
        return activate(outs[self.refs[0]] * x, self.act)


@register("sam")
class Sam(ScaleChannels):
    pass


@register("upsample")
class Upsample(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.stride = layer.p["stride"]
        self.scale = layer.p["scale"]
        self.out_shape = layer.out_shape

    def forward(self, x, outs=None):
        s = self.stride
        n, c, h, w = x.shape
        if s > 0:
            y = x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)
        else:
            s = -s
            oh, ow = self.out_shape[1:]
            y = x[:, :, :oh * s, :ow * s].reshape(n, c, oh, s, ow, s).sum(dim=(3, 5))
        return y * self.scale if self.scale != 1 else y


# Shapes below come from the layer (static), the batch is -1: the ONNX export traces these modules as they are.
def space_to_depth(x, c, h, w, s):
    """out[(dy*s+dx)*c + c0, j, i] = in[c0, j*s+dy, i*s+dx] (Darknet's reorg order; (c, h, w) = input)."""
    return x.reshape(-1, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).reshape(-1, s * s * c, h // s, w // s)


def depth_to_space(x, c, h, w, s):
    oc = c // (s * s)
    return x.reshape(-1, s, s, oc, h, w).permute(0, 3, 4, 1, 5, 2).reshape(-1, oc, h * s, w * s)


@register("reorg3d")
class Reorg3d(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.stride = layer.p["stride"]
        self.reverse = layer.p["reverse"]
        self.in_shape = tuple(layer.in_shape)
        self.out_shape = tuple(layer.out_shape)

    def forward(self, x, outs=None):
        c, h, w = self.in_shape
        f = depth_to_space if self.reverse else space_to_depth
        return f(x, c, h, w, self.stride)


@register("reorg")
class ReorgOld(Reorg3d):
    """pjreddie's [reorg]: the flat input read as (c/s^2, h*s, w*s), space-to-depth'ed into flat (c, h, w)."""

    def forward(self, x, outs=None):
        c, h, w = self.in_shape
        s = self.stride
        if self.reverse:
            y = depth_to_space(x, c * s * s, h // s, w // s, s)
        else:
            y = space_to_depth(x, c // (s * s), h * s, w * s, s)
        return y.reshape((-1,) + self.out_shape)


def _scale_xy(t, s):
    return t if s == 1 else t * s - 0.5 * (s - 1)


@register("yolo")
class Yolo(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        p = layer.p
        self.n = len(p["mask"])
        self.per = p["classes"] + 5
        self.s = p["scale_x_y"]
        self.new_coords = p["new_coords"]
        self.shape = tuple(layer.in_shape)

    def forward(self, x, outs=None):
        c, h, w = self.shape
        v = x.reshape(-1, self.n, self.per, h, w)
        if self.new_coords:
            xy, rest = v[:, :, :2], v[:, :, 2:]
        else:
            xy = torch.sigmoid(v[:, :, :2])
            rest = torch.cat([v[:, :, 2:4], torch.sigmoid(v[:, :, 4:])], 2)
        return torch.cat([_scale_xy(xy, self.s), rest], 2).reshape(-1, c, h, w)


@register("gaussian_yolo")
class GaussianYolo(Yolo):
    def __init__(self, layer):
        super().__init__(layer)
        self.per = layer.p["classes"] + 9

    def forward(self, x, outs=None):
        c, h, w = self.shape
        v = x.reshape(-1, self.n, self.per, h, w)
        sg = torch.sigmoid(v)
        parts = [_scale_xy(sg[:, :, 0:1], self.s), sg[:, :, 1:2], _scale_xy(sg[:, :, 2:3], self.s), sg[:, :, 3:4],
                 v[:, :, 4:5], sg[:, :, 5:6], v[:, :, 6:7], sg[:, :, 7:]]
        return torch.cat(parts, 2).reshape(-1, c, h, w)


def softmax_tree(x, tree, temperature=1.0):
    """Darknet's softmax_tree over the last dim: a softmax inside every sibling group."""
    parts = []
    for off, size in zip(tree["group_offset"], tree["group_size"]):
        parts.append(torch.softmax(x[..., off:off + size] / temperature, -1))
    return torch.cat(parts, -1)


def _check_tree(layer):
    tree = layer.p.get("tree")
    if tree is not None and "missing" in tree:
        raise CfgError(f"[{layer.section.name}] tree={tree['missing']}: file not found, cannot run this layer",
                       layer.section.path, layer.section.line)
    return tree


@register("region")
class Region(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        p = layer.p
        self.num = p["num"]
        self.classes = p["classes"]
        self.per = p["coords"] + 1 + p["classes"]
        self.softmax = p["softmax"]
        self.tree = _check_tree(layer)
        self.shape = tuple(layer.in_shape)

    def forward(self, x, outs=None):
        c, h, w = self.shape
        v = x.reshape(-1, c, h * w).transpose(1, 2).reshape(-1, h * w, self.num, self.per)
        coords, obj, cls = v[..., :4], v[..., 4:5], v[..., 5:]
        if self.tree is not None:
            cls = softmax_tree(cls, self.tree)
        elif self.softmax:
            cls = torch.softmax(cls, -1)
        return torch.cat([coords, torch.sigmoid(obj), cls], -1)


@register("detection")
class Detection(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        p = layer.p
        self.cells = p["side"] * p["side"]
        self.classes = p["classes"]
        self.softmax = p["softmax"]

    def forward(self, x, outs=None):
        n = x.shape[0]
        x = x.reshape(n, -1)
        if not self.softmax:
            return x
        k = self.cells * self.classes
        cls = torch.softmax(x[:, :k].view(n, self.cells, self.classes), -1).view(n, k)
        return torch.cat([cls, x[:, k:]], 1)


@register("softmax")
class Softmax(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        p = layer.p
        self.groups, self.t, self.spatial = p["groups"], p["temperature"], p["spatial"]
        self.tree = _check_tree(layer)

    def forward(self, x, outs=None):
        n = x.shape[0]
        if self.spatial:
            return torch.softmax(x / self.t, 1)
        flat = x.reshape(n, -1)
        if self.tree is not None:
            return softmax_tree(flat, self.tree, self.t).view(n, -1, 1, 1)
        y = torch.softmax(flat.view(n, self.groups, -1) / self.t, -1)
        return y.reshape(n, -1, 1, 1)


@register("cost", "contrastive")
class ZeroOutput(DarknetModule):
    """Darknet's CPU forward leaves these outputs at 0 at inference."""

    def __init__(self, layer):
        super().__init__(layer)
        self.out_shape = layer.out_shape

    def forward(self, x, outs=None):
        return x.new_zeros((x.shape[0],) + tuple(self.out_shape))


@register("crop")
class Crop(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        _, h, w = layer.in_shape
        _, self.ch, self.cw = layer.out_shape
        self.dh, self.dw = (h - self.ch) // 2, (w - self.cw) // 2
        self.noadjust = layer.p["noadjust"]

    def forward(self, x, outs=None):
        y = x[:, :, self.dh:self.dh + self.ch, self.dw:self.dw + self.cw]
        return y if self.noadjust else y * 2 - 1


@register("dropout", "empty")
class Identity(DarknetModule):
    def forward(self, x, outs=None):
        return x


@register("normalization")
class LRN(DarknetModule):
    """Darknet's normalization_layer, including its off-by-one window (see the semantics doc)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p

    def forward(self, x, outs=None):
        p = self.p
        size, alpha = p["size"], p["alpha"]
        c = x.shape[1]
        sq = x * x
        base = sq[:, :size // 2].sum(1, keepdim=True)
        zero = torch.zeros_like(sq[:, :1])
        add = [sq[:, k + size // 2:k + size // 2 + 1] if k + size // 2 < c else zero for k in range(1, c)]
        sub = [sq[:, k - (size - 1) // 2 - 1:k - (size - 1) // 2] if k - (size - 1) // 2 - 1 >= 0 else zero
               for k in range(1, c)]
        delta = torch.cat([zero] + [a - s for a, s in zip(add, sub)], 1) if c > 1 else zero
        norms = p["kappa"] + alpha * (base + torch.cumsum(delta, 1))
        return x * norms.pow(-p["beta"])


@register("batchnorm")
class BatchNorm(DarknetModule):
    def forward(self, x, outs=None):
        return batchnorm(x, self.rolling_mean, self.rolling_variance, self.scales, self.biases)


@register("activation")
class Activation(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.act = layer.p["activation"]

    def forward(self, x, outs=None):
        return activate(x, self.act)


@register("implicit")
class Implicit(DarknetModule):
    def forward(self, x, outs=None):
        return self.weights.unsqueeze(0).expand((x.shape[0],) + tuple(self.weights.shape))


@register("history")
class NotRunnable(DarknetModule):
    """Layers that parse and summarise but cannot run ([history])."""

    def __init__(self, layer):
        super().__init__(layer)
        self.where = (layer.section.path, layer.section.line, layer.section.name)

    def forward(self, x, outs=None):
        path, line, name = self.where
        raise CfgError(f"[{name}] layers can be summarised, but running them is not supported", path, line)


def build_module(layer: Layer) -> DarknetModule:
    return BUILDERS[layer.type](layer)


from . import recurrent  # noqa: E402,F401  (registers rnn, crnn, gru, lstm, conv_lstm)
