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

from . import geometry
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


def batchnorm(x, mean, var, scale, bias, training=False):
    """Inference BN on the rolling statistics; ``training``: cuDNN's training BN as Darknet's GPU build runs it
    (batch mean and biased variance, eps inside the root, rolling ``.99 r + .01 stat`` with the unbiased
    variance), which is torch's own batch-norm with momentum 0.01 updating the module's buffers in place."""
    if training:
        return F.batch_norm(x, mean, var, scale, bias, training=True, momentum=0.01, eps=BN_EPS)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    inv = scale / torch.sqrt(var + BN_EPS)
    return (x - mean.view(shape)) * inv.view(shape) + bias.view(shape)


def fold_bn(w, b, scale, mean, var, dtype=torch.float64):
    """Batch norm folded into the weights ``w`` (filters first) and bias ``b``: ``w*s/sqrt(v+eps)``,
    ``b - m*s/sqrt(v+eps)`` (Darknet's ``fuse_conv_batchnorm``). The per-filter factor is computed in ``dtype``:
    float64 as Darknet's fuse (the plan, the ONNX export); ``None``, the tensors' own precision, for the XNOR
    path (the module and its export form must agree on every sign). The weight product is in the weights'
    dtype. Returns ``(w', b')`` in the dtypes of ``w`` and ``b``."""
    dtype = dtype or scale.dtype
    inv = scale.to(dtype) / torch.sqrt(var.to(dtype) + BN_EPS)
    wf = w * inv.to(w.dtype).view((-1,) + (1,) * (w.dim() - 1))
    return wf, (b.to(dtype) - mean.to(dtype) * inv).to(b.dtype)


def binary_weights(w):
    """Darknet's binarized weights: ``sign(w) * mean|w|`` per filter (``binary=1``, XNOR)."""
    return torch.where(w > 0, 1.0, -1.0) * w.abs().mean(dim=(1, 2, 3), keepdim=True)


def xnor_weights(w, b, scale, mean, var):
    """XNOR convs as ``detector test`` runs them: BN (``scale`` not None) fused into the float weights in their
    own precision, then binarized. Returns ``(weights, bias)``."""
    if scale is not None:
        w, b = fold_bn(w, b, scale, mean, var, None)
    return binary_weights(w), b


def xnor_inputs(x):
    """XNOR inputs: ``+1`` where ``x > 0``, else ``-1``."""
    return torch.where(x > 0, 1.0, -1.0)


def _pad_to(x, pads, value=0.0):
    """F.pad with (top, left, bottom, right) pads; negative top/left crop."""
    t, l, b, r = pads
    if any(pads):
        x = F.pad(x, (l, r, t, b), value=value)
    return x


def window_conv(x, w, pads, strides, dilation, groups, out_hw):
    """Darknet's convolution geometry: ``x`` padded by ``pads`` (top, left, bottom, right), a padding-free
    convolution, its first ``out_hw`` rows/columns."""
    t, l, b, r = pads
    if t == l == b == r:
        y = F.conv2d(x, w, None, strides, t, dilation, groups)
    else:
        y = F.conv2d(_pad_to(x, pads), w, None, strides, 0, dilation, groups)
    oh, ow = out_hw
    if y.shape[2] != oh or y.shape[3] != ow:
        y = y[:, :, :oh, :ow]
    return y


def blur_kernel(c, size, dtype=torch.float32, device=None):
    """Darknet's fixed anti-aliasing kernel, depthwise for ``c`` channels: the 3x3 outer product of [1 2 1]/4,
    or 2x2 of 1/4 (``size`` from ``geometry.blur``)."""
    if size == 2:
        k = torch.full((2, 2), 0.25, dtype=dtype, device=device)
    else:
        v = torch.tensor([1.0, 2.0, 1.0], dtype=dtype, device=device)
        k = torch.outer(v, v) / 16
    return k.expand(c, 1, size, size)


def blur(x, size, pad, stride):
    """Darknet's anti-aliasing blur (a depthwise convolution with ``blur_kernel``)."""
    c = x.shape[1]
    return F.conv2d(x, blur_kernel(c, size, x.dtype, x.device), stride=stride, padding=pad, groups=c)


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

    def conv(self, x, w, pads=None):
        """The convolution alone (no bias/BN/activation) with Darknet's geometry; ``pads`` default: the layer's."""
        p = self.p
        return window_conv(x, w, p["pads"] if pads is None else pads, (p["stride_y"], p["stride_x"]),
                           p["dilation"], p["groups"], p["conv_out"])

    def forward(self, x, outs=None):
        p = self.p
        w, b, scale, mean, var = self.tensors()
        if p["xnor"]:
            y = self._xnor(x, w, b, scale, mean, var)
        else:
            if p["binary"]:
                w = binary_weights(w)
            y = self.conv(x, w)
            if p["bn"]:
                y = batchnorm(y, mean, var, scale, b, self.training)
            else:
                y = y + b.view(1, -1, 1, 1)
        y = activate(y, self.act)
        if p["antialiasing"]:
            y = blur(y, p["blur_size"], p["blur_pad"], p["blur_stride"])
        return y

    def _xnor(self, x, w, b, scale, mean, var):
        # Darknet runs XNOR convs only as detector test does: BN fused into the float weights, then
        # weights binarized to +-mean|W'| per filter and inputs to +-1 (padding reads as -1).
        wb, b = xnor_weights(w, b, scale, mean, var)
        (P, _), (eb, er) = geometry.symmetric(self.p["pads"])
        xb = F.pad(xnor_inputs(x), (P, P, P, P), value=-1.0)
        return self.conv(xb, wb, (0, 0, eb, er)) + b.view(1, -1, 1, 1)


@register("local")
class Local(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p
        self.out_shape = layer.out_shape

    def forward(self, x, outs=None):
        p = self.p
        n, oh, ow = self.out_shape
        k, s = p["size"], p["stride"]
        xp = _pad_to(x, p["pads"])
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
            y = batchnorm(y, self.rolling_mean, self.rolling_variance, self.scales, self.biases, self.training)
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
        xp = _pad_to(x, p["pads"], value=float("-inf"))
        if self.training:     # torch's CPU max-pool with indices (autograd) is several times faster channels-last
            xp = xp.contiguous(memory_format=torch.channels_last)
        y = F.max_pool2d(xp, size, (p["stride_y"], p["stride_x"]))
        y = y[:, :, :oh, :ow]
        if self.training:
            y = y.contiguous()
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
        pads = p["pads"]
        ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        st = (p["stride_y"], p["stride_x"])
        s = F.avg_pool2d(_pad_to(x, pads), size, st, divisor_override=1)[:, :, :oh, :ow]
        n = F.avg_pool2d(_pad_to(ones, pads), size, st, divisor_override=1)[:, :, :oh, :ow]
        return s / n


@register("avgpool")
class AvgPool(DarknetModule):
    def forward(self, x, outs=None):
        return x.mean(dim=(2, 3), keepdim=True)


def route_inputs(outs, slices, groups):
    """The channel ranges ``(layer, start, stop)`` a ``[route]`` concatenates (whole outputs when groups=1)."""
    return [outs[i] if groups == 1 else outs[i][:, a:b] for i, a, b in slices]


@register("route")
class Route(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.groups = layer.p["groups"]
        self.group_id = layer.p["group_id"]
        self.slices = layer.p["slices"]

    def forward(self, x, outs):
        parts = route_inputs(outs, self.slices, self.groups)
        if len(parts) == 1:      # in training a distinct tensor, so its own gradient is Darknet's l.delta
            return parts[0].view_as(parts[0]) if self.training else parts[0]
        return torch.cat(parts, 1)


def add_leading(y, f, c):
    """y[:, :c] += f[:, :c] without in-place ops (keeps autograd and aliasing safe)."""
    if c >= y.shape[1] and f.shape[1] == y.shape[1]:
        return y + f
    if c >= y.shape[1]:
        return y + f[:, :c]
    return torch.cat([y[:, :c] + f[:, :c], y[:, c:]], 1)


def add_sources(y, outs, refs, channels):
    """``[shortcut]``/``[partial_shortcut]``: the leading ``channels[k]`` channels of each source added."""
    for i, c in zip(refs, channels):
        y = add_leading(y, outs[i], c)
    return y


def _train_shortcut_weights(w, norm):
    """Weighted [shortcut] in training as Darknet's GPU kernels compute it (``shortcut_multilayer_kernel``,
    ``backward_shortcut_multilayer_kernel``): relu normalisation through ``lrelu`` (floor 0.001), and the weight
    gradient ``delta * input * g`` with g = w_norm (relu), w_norm (1 - w_norm) (softmax), 1 (none) -- not the
    derivative of the normalisation. The value is w_norm; d/dw = g; the inputs see w_norm as a constant."""
    with torch.no_grad():
        if norm == "relu":
            r = torch.where(w > 0.001, w, torch.full_like(w, 0.001))
            wn = r / (0.0001 + r.sum(0, keepdim=True))
            g = wn
        elif norm == "softmax":
            e = torch.exp(w - w.max(0, keepdim=True).values)
            wn = e / (0.0001 + e.sum(0, keepdim=True))
            g = wn * (1 - wn)
        else:
            return w
    return wn + (w - w.detach()) * g


@register("shortcut")
class Shortcut(DarknetModule):
    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p

    def _weights(self, w):
        norm = self.p["weights_normalization"]
        if self.training:
            return _train_shortcut_weights(w, norm)
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
            y = add_sources(x, outs, self.refs, p["channels"])
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
        stride, sample, (mc, mh, mw) = p["strided_geometry"]
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
        return activate(add_sources(x, outs, self.refs, self.channels), self.act)


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
        self.n = p["layout"].anchors
        self.per = p["layout"].per
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
        self.per = p["layout"].per
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
            return self._train_grad(x, torch.softmax(x / self.t, 1))
        flat = x.reshape(n, -1)
        if self.tree is not None:
            return self._train_grad(x, softmax_tree(flat, self.tree, self.t).view(n, -1, 1, 1))
        y = torch.softmax(flat.view(n, self.groups, -1) / self.t, -1)
        return self._train_grad(x, y.reshape(n, -1, 1, 1))

    def _train_grad(self, x, y):
        """Darknet's backward_softmax_layer adds the delta to the input's unchanged (its own delta is already
        the x-entropy gradient w.r.t. the input): in training the output passes gradients straight through."""
        if not self.training:
            return y
        xf = x.reshape(y.shape)
        return xf + (y - xf).detach()


@register("cost", "contrastive")
class ZeroOutput(DarknetModule):
    """Darknet's CPU forward leaves these outputs at 0 at inference. In a training forward with truth
    (``Darknet.loss`` sets ``truth``), [cost] outputs its per-element error, as Darknet's ``l.output``."""
    truth = None

    def __init__(self, layer):
        super().__init__(layer)
        self.out_shape = layer.out_shape
        self.layer = layer

    def forward(self, x, outs=None):
        if self.training and self.truth is not None and self.type == "cost":
            from .train.heads import cost_terms
            err = cost_terms(self.layer, x.detach().cpu().numpy().reshape(x.shape[0], -1), self.truth)[1]
            return torch.from_numpy(err).to(x.device).view((x.shape[0],) + tuple(self.out_shape))
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


@register("empty")
class Identity(DarknetModule):
    def forward(self, x, outs=None):
        return x


@register("dropout")
class Dropout(Identity):
    """Identity at inference; in training Darknet's ``forward_dropout_layer``: zero with ``probability``,
    scale the rest by 1/(1 - probability) (the same mask on the delta)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.probability = layer.section.get_float("probability", 0.5)
        self.where = (layer.section.path, layer.section.line)
        if layer.section.get_int("dropblock", 0):
            self.probability = None        # DropBlock: GPU only in Darknet; refused in training

    def forward(self, x, outs=None):
        if not self.training:
            return x
        if self.probability is None:
            raise CfgError("[dropout] dropblock=1 is not supported in training (Darknet runs it on GPUs only)",
                           *self.where)
        return F.dropout(x, self.probability, training=True)


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
    """Standalone [batchnorm]. Its training backward *copies* its delta over the previous layer's (also on the
    GPU: ``backward_batchnorm_layer_gpu``), which ``Darknet._run`` reproduces by giving the previous layer's other
    consumers a detached output."""

    def forward(self, x, outs=None):
        return batchnorm(x, self.rolling_mean, self.rolling_variance, self.scales, self.biases, self.training)


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

