"""Layer graph: cfg sections -> layers with shapes, BFLOPs and their ``.weights`` arrays. No torch here.

Every layer type is one parse function registered under its canonical section type (see
``cfg.SECTION_ALIASES``). A parse function reads its keys with Darknet's defaults, checks its inputs,
and returns a :class:`Layer` holding its output shape, BFLOPs and -- the single definition used by the
weights codec, the summary and the torch modules -- the arrays it stores in ``.weights``, in file order.

Shapes are ``(c, h, w)``; layers Darknet treats as flat vectors have ``(outputs, 1, 1)``.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import geometry, heads
from .cfg import INT_MAX, CfgWarning, Section, echo, read_cfg, read_cfg_text, warn_unused
from .errors import CfgError
from .fileio import read_input
from .registry import Registry

ACTIVATIONS = (
    "logistic", "swish", "mish", "hard_mish", "normalize_channels", "normalize_channels_softmax",
    "normalize_channels_softmax_maxval", "loggy", "relu", "relu6", "elu", "selu", "gelu", "relie", "plse",
    "hardtan", "lhtan", "linear", "ramp", "revleaky", "leaky", "tanh", "stair",
)
ACTIVATION_ALIASES = {"revleaky": "leaky"}    # names Darknet reads as another activation
# gain of the default initialisation: 3 for bounded/linear activations, else 6 (matches the oracle generator)
_GAIN3 = {"linear", "logistic", "tanh", "loggy", "hardtan", "lhtan", "plse", "stair", "normalize_channels",
          "normalize_channels_softmax", "normalize_channels_softmax_maxval"}

HEAD_TYPES = ("yolo", "gaussian_yolo", "region", "detection")
# layers that keep state between calls (or cannot run): no ONNX export
STATEFUL_TYPES = ("rnn", "gru", "lstm", "crnn", "conv_lstm", "history")

# keys Darknet reads for every layer (training only for us)
_GENERIC_KEYS = ("clip", "onlyforward", "dont_update", "burnin_update", "stopbackward", "train_only_bn",
                 "dontload", "dontloadscales", "learning_rate", "stream", "wait_stream")


@dataclass(frozen=True)
class ArraySpec:
    """One array of a layer in the ``.weights`` file.

    name: attribute name in the torch module (``.`` separates sub-layers of recurrent layers);
    shape: the tensor's shape (file order is its C order, unless ``transpose``);
    running: BN running statistics (not learnable parameters);
    transpose: ``"flipped"`` (conv ``flipped=1``) or ``"header"`` (connected, when the file header says so):
    the file holds the transpose of the 2-D view ``(shape[0], prod(shape[1:]))``;
    init: ``(kind, param)`` for a fresh network (``bias``, ``scale``, ``mean``, ``var``, ``weight`` with
    ``gain/fan_in``, ``const`` value).
    """
    name: str
    shape: tuple
    running: bool = False
    transpose: str | None = None
    init: tuple = ("bias", None)

    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "size", int(math.prod(self.shape)))


@dataclass
class Layer:
    index: int
    type: str
    section: Section
    in_shape: tuple
    out_shape: tuple
    bflops: float = 0.0
    arrays: list = field(default_factory=list)
    refs: list = field(default_factory=list)        # absolute indices of other layers this one reads
    p: dict = field(default_factory=dict)           # parsed parameters

    @property
    def outputs(self) -> int:
        return int(math.prod(self.out_shape))

    @property
    def weights_floats(self) -> int:
        return sum(a.size for a in self.arrays)

    @property
    def running_floats(self) -> int:
        return sum(a.size for a in self.arrays if a.running)

    @property
    def where(self) -> str:
        return f"{self.section.path}:{self.section.line}"


@dataclass
class Network:
    path: str
    net: dict
    layers: list

    @property
    def width(self):
        return self.net["width"]

    @property
    def height(self):
        return self.net["height"]

    @property
    def channels(self):
        return self.net["channels"]

    @property
    def input_shape(self):
        return self.net["input_shape"]

    @property
    def bflops(self) -> float:
        """Darknet's total: a float32 running sum of each layer's float32 ``l.bflops``."""
        total = np.float32(0)
        for l in self.layers:
            if l.bflops > 0:
                total = np.float32(total + np.float32(l.bflops))
        return float(total)

    @property
    def weights_floats(self) -> int:
        return sum(l.weights_floats for l in self.layers)

    @property
    def running_floats(self) -> int:
        return sum(l.running_floats for l in self.layers)

    @property
    def params(self) -> int:
        """Learnable floats (the ``.weights`` payload without BN running statistics)."""
        return self.weights_floats - self.running_floats

    @property
    def heads(self) -> list:
        return [l.index for l in self.layers if l.type in HEAD_TYPES]

    def liveness(self):
        """``(needed, free_after)``: the layers whose outputs must be kept (read later, or network outputs),
        and for each layer index the outputs no later layer reads once it has run."""
        last_use = {}
        for l in self.layers:
            for r in l.refs:
                last_use[r] = max(last_use.get(r, -1), l.index)
        keep = set(self.output_layers)
        free_after = {}
        for r, last in last_use.items():
            if r not in keep:
                free_after.setdefault(last, []).append(r)
        return set(last_use) | keep, free_after

    @property
    def output_layers(self) -> list:
        """Darknet's network outputs: every detection head, else the last layer that is not [cost]."""
        h = self.heads
        if h:
            return h
        for l in reversed(self.layers):
            if l.type != "cost":
                return [l.index]
        return [len(self.layers) - 1]


# ----------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------
PARSERS = Registry("layer parsers")     # section type -> parse function
register = PARSERS.register


class Context:
    """What a parse function sees: the section, the previous output shape and the layers so far."""

    def __init__(self, sec: Section, index: int, in_shape: tuple, layers: list, net: dict):
        self.sec = sec
        self.index = index
        self.in_shape = in_shape
        self.layers = layers
        self.net = net

    @property
    def c(self):
        return self.in_shape[0]

    @property
    def h(self):
        return self.in_shape[1]

    @property
    def w(self):
        return self.in_shape[2]

    @property
    def inputs(self):
        return int(math.prod(self.in_shape))

    def error(self, reason, key=None):
        return self.sec.error(reason, key)

    def layer(self, out_shape, bflops=0.0, arrays=(), refs=(), **p) -> Layer:
        if any(int(v) <= 0 for v in out_shape):
            raise self.error(f"output shape {fmt_shape(out_shape)} from input {fmt_shape(self.in_shape)} is empty")
        return Layer(self.index, self.sec.type, self.sec, tuple(self.in_shape), tuple(int(v) for v in out_shape),
                     float(bflops), list(arrays), list(refs), p)

    def ref(self, value: int, key: str) -> int:
        """Absolute index of a layer reference (negative = relative); must point backwards."""
        idx = self.index + value if value < 0 else value
        if idx < 0 or idx >= self.index:
            what = "points forward or at itself" if idx >= self.index else "is out of range"
            raise self.error(f"'{key}={value}' {what} (layer {self.index} can use layers 0..{self.index - 1})",
                             key)
        return idx

    def refs(self, key: str) -> list:
        return [self.ref(v, key) for v in self.sec.get_ints(key, required=True)]

    def activation(self, default="linear", key="activation") -> str:
        a = self.sec.get_str(key, default)
        a = ACTIVATION_ALIASES.get(a, a)
        if a not in ACTIVATIONS:
            warnings.warn(CfgWarning(f"{self.sec.path}:{self.sec.options[key].line}: unknown activation "
                                     f"{echo(a)}, Darknet uses relu"), stacklevel=2)
            a = "relu"
        return a

    def need_image(self):
        if self.c <= 0 or self.h <= 0 or self.w <= 0:
            raise self.error(f"needs an image input, got {fmt_shape(self.in_shape)}")


def fmt_shape(s) -> str:
    c, h, w = s
    return f"{c}x{h}x{w}"


def _gain(act):
    return 3 if act in _GAIN3 else 6


def bn_arrays(prefix, n):
    return [ArraySpec(prefix + "scales", (n,), init=("scale", None)),
            ArraySpec(prefix + "rolling_mean", (n,), running=True, init=("mean", None)),
            ArraySpec(prefix + "rolling_variance", (n,), running=True, init=("var", None))]


def conv_geometry(h, w, size, stride_y, stride_x, padding):
    return geometry.conv_out(h, size, stride_y, padding), geometry.conv_out(w, size, stride_x, padding)


def conv_arrays(prefix, c, n, groups, size, bn, act, flipped=False):
    fan_in = (c // groups) * size * size
    arrs = [ArraySpec(prefix + "biases", (n,))]
    if bn:
        arrs += bn_arrays(prefix, n)
    arrs.append(ArraySpec(prefix + "weights", (n, c // groups, size, size),
                          transpose="flipped" if flipped else None, init=("weight", f"{_gain(act)}/{fan_in}")))
    return arrs


def connected_arrays(prefix, inputs, outputs, bn, act):
    arrs = [ArraySpec(prefix + "biases", (outputs,)),
            ArraySpec(prefix + "weights", (outputs, inputs), transpose="header",
                      init=("weight", f"{_gain(act)}/{inputs}"))]
    if bn:
        arrs += bn_arrays(prefix, outputs)
    return arrs


# ----------------------------------------------------------------------------------------------------
# layer parsers (one per section type)
# ----------------------------------------------------------------------------------------------------
@register("convolutional")
def parse_convolutional(g: Context) -> Layer:
    s = g.sec
    g.need_image()
    n = s.get_int("filters", 1)
    size = s.get_int("size", 1)
    stride = s.get_int("stride", 1)
    sx = s.get_int("stride_x", -1)
    sy = s.get_int("stride_y", -1)
    sx = stride if sx < 1 else sx
    sy = stride if sy < 1 else sy
    pad = s.get_int("pad", 0)
    padding = s.get_int("padding", 0)
    if pad:
        padding = size // 2
    groups = max(1, s.get_int("groups", 1))
    dilation = s.get_int("dilation", 1)
    if size == 1:
        dilation = 1
    act = g.activation("logistic")
    bn = s.get_int("batch_normalize", 0)
    if s.get_int("cbn", 0):
        bn = 2
    xnor = s.get_int("xnor", 0)
    binary = s.get_int("binary", 0)
    bin_output = s.get_int("bin_output", 0)
    aa = s.get_int("antialiasing", 0)
    flipped = s.get_int("flipped", 0)
    share = s.get_int("share_index", None)
    s.touch("assisted_excitation", "sway", "rotate", "stretch", "stretch_sway", "angle", "grad_centr", "reverse",
            "coordconv", "dot", "deform", "adam")
    if xnor:
        groups = 1
    if n < 1 or size < 1 or sx < 1 or sy < 1 or dilation < 1:
        raise g.error("filters, size, stride and dilation must be >= 1")
    if g.c % groups or n % groups:
        raise g.error(f"groups={groups} must divide the input channels ({g.c}) and filters ({n})", "groups")
    share_layer = None
    if share is not None:
        share_layer = g.ref(share, "share_index")
        other = g.layers[share_layer]
        if other.type != "convolutional" or other.p["weights_shape"] != (n, g.c // groups, size, size) \
                or bool(other.p["bn"]) != bool(bn):
            raise g.error(f"share_index={share} points at layer {share_layer}, which is not a convolutional "
                          f"layer of the same shape", "share_index")
    cs_x, cs_y = (1, 1) if aa else (sx, sy)
    oh, ow = conv_geometry(g.h, g.w, size, cs_y, cs_x, padding)
    nweights = (g.c // groups) * n * size * size
    bflops = 2.0 * nweights * oh * ow / 1e9
    if xnor:
        bflops /= 32
    p = dict(filters=n, size=size, stride_x=cs_x, stride_y=cs_y, padding=padding, groups=groups,
             dilation=dilation, activation=act, bn=bn, xnor=xnor, binary=binary, bin_output=bin_output,
             share_index=share_layer, weights_shape=(n, g.c // groups, size, size), conv_out=(oh, ow),
             antialiasing=aa, blur_stride=(sy, sx),
             pads=geometry.pads((g.h, g.w), (oh, ow), size, (cs_y, cs_x), padding * dilation, dilation))
    if aa:
        bsize, bpad = geometry.blur(aa)
        oh, ow = conv_geometry(oh, ow, bsize, sy, sx, bpad)
        p.update(blur_size=bsize, blur_pad=bpad)
    arrays = [] if share_layer is not None else conv_arrays("", g.c, n, groups, size, bn, act, flipped)
    refs = [share_layer] if share_layer is not None else []
    return g.layer((n, oh, ow), bflops, arrays, refs, **p)


@register("local")
def parse_local(g: Context) -> Layer:
    s = g.sec
    g.need_image()
    n = s.get_int("filters", 1)
    size = s.get_int("size", 1)
    stride = s.get_int("stride", 1)
    pad = s.get_int("pad", 0)
    act = g.activation("logistic")
    oh = (g.h - (1 if pad else size)) // stride + 1
    ow = (g.w - (1 if pad else size)) // stride + 1
    loc = oh * ow
    arrays = [ArraySpec("biases", (n, oh, ow)),
              ArraySpec("weights", (loc, n, g.c * size * size), init=("weight", f"{_gain(act)}/{size * size * g.c}"))]
    return g.layer((n, oh, ow), 0.0, arrays, filters=n, size=size, stride=stride, pad=pad, activation=act,
                   pads=geometry.pads((g.h, g.w), (oh, ow), size, (stride, stride), pad))


@register("connected")
def parse_connected(g: Context) -> Layer:
    s = g.sec
    out = s.get_int("output", 1)
    act = g.activation("logistic")
    bn = s.get_int("batch_normalize", 0)
    if out < 1:
        raise g.error("output must be >= 1", "output")
    return g.layer((out, 1, 1), 0.0, connected_arrays("", g.inputs, out, bn, act),
                   inputs=g.inputs, outputs=out, activation=act, bn=bn)


def _pool_geometry(g: Context, default_padding=True):
    s = g.sec
    stride = s.get_int("stride", 1)
    sx = s.get_int("stride_x", stride)
    sy = s.get_int("stride_y", stride)
    size = s.get_int("size", stride)
    padding = s.get_int("padding", size - 1)
    if size < 1 or sx < 1 or sy < 1:
        raise g.error("size and stride must be >= 1")
    return dict(size=size, stride_x=sx, stride_y=sy, padding=padding,
                pool_out=(geometry.pool_out(g.h, size, sy, padding), geometry.pool_out(g.w, size, sx, padding)))


def _pool_pads(g: Context, p: dict) -> dict:
    """The pool's resolved pads: windows start at Darknet's ``-padding/2``."""
    p["pads"] = geometry.pads((g.h, g.w), p["pool_out"], p["size"], (p["stride_y"], p["stride_x"]),
                              geometry.pool_start(p["padding"]))
    return p


@register("maxpool")
def parse_maxpool(g: Context) -> Layer:
    s = g.sec
    g.need_image()
    p = _pool_geometry(g)
    depth = s.get_int("maxpool_depth", 0)
    out_channels = s.get_int("out_channels", 1)
    aa = s.get_int("antialiasing", 0)
    s.touch("maxpool_zero_nonmax")
    oh, ow = p["pool_out"]
    c = g.c
    if depth:
        oh, ow, c = g.h, g.w, out_channels
        p["pool_out"] = (oh, ow)
    bflops = p["size"] * p["size"] * g.c * oh * ow / 1e9
    p.update(maxpool_depth=depth, out_channels=c, antialiasing=aa, blur_stride=(p["stride_y"], p["stride_x"]))
    if aa:
        # Darknet pools at stride 1, then blurs with the pool's stride
        p["stride_x"] = p["stride_y"] = 1
        oh = geometry.pool_out(g.h, p["size"], 1, p["padding"])
        ow = geometry.pool_out(g.w, p["size"], 1, p["padding"])
        p["pool_out"] = (oh, ow)
        bsize, bpad = geometry.blur(aa)
        oh, ow = conv_geometry(oh, ow, bsize, p["blur_stride"][0], p["blur_stride"][1], bpad)
        p.update(blur_size=bsize, blur_pad=bpad)
    return g.layer((c, oh, ow), bflops, **_pool_pads(g, p))


@register("local_avgpool")
def parse_local_avgpool(g: Context) -> Layer:
    g.need_image()
    p = _pool_geometry(g)
    oh, ow = p["pool_out"]
    return g.layer((g.c, oh, ow), p["size"] * p["size"] * g.c * oh * ow / 1e9, **_pool_pads(g, p))


@register("avgpool")
def parse_avgpool(g: Context) -> Layer:
    g.need_image()
    return g.layer((g.c, 1, 1))


@register("route")
def parse_route(g: Context) -> Layer:
    s = g.sec
    refs = g.refs("layers")
    groups = s.get_int("groups", 1)
    gid = s.get_int("group_id", 0)
    if groups < 1 or not 0 <= gid < groups:
        raise g.error(f"need groups >= 1 and 0 <= group_id < groups (groups={groups}, group_id={gid})", "group_id")
    shapes = [g.layers[i].out_shape for i in refs]
    c0, h0, w0 = shapes[0]
    for i, sh in zip(refs, shapes):
        if sh[1:] != (h0, w0):
            raise g.error(f"layers {refs[0]} ({fmt_shape(shapes[0])}) and {i} ({fmt_shape(sh)}) have different "
                          f"width/height", "layers")
        if sh[0] % groups:
            raise g.error(f"groups={groups} does not divide the {sh[0]} channels of layer {i}", "groups")
    c = sum(sh[0] for sh in shapes) // groups
    slices = [(i,) + geometry.group_slice(sh[0], groups, gid) for i, sh in zip(refs, shapes)]
    return g.layer((c, h0, w0), 0.0, (), refs, groups=groups, group_id=gid, slices=slices)


_SHORTCUT_WEIGHTS = ("none", "per_feature", "per_layer", "per_channel")


@register("shortcut")
def parse_shortcut(g: Context) -> Layer:
    s = g.sec
    refs = g.refs("from")
    act = g.activation("linear")
    wtype = s.get_str("weights_type", "none")
    wnorm = s.get_str("weights_normalization", "none")
    if wtype not in _SHORTCUT_WEIGHTS:
        raise g.error(f"unknown weights_type {echo(wtype)} (none, per_feature, per_layer, per_channel)", "weights_type")
    if wnorm not in ("none", "relu", "avg_relu", "softmax"):
        raise g.error(f"unknown weights_normalization {echo(wnorm)} (relu, avg_relu, softmax)",
                      "weights_normalization")
    if wtype != "none" and wnorm == "none":
        raise g.error(f"weights_type={wtype} needs weights_normalization=relu|avg_relu|softmax",
                      "weights_normalization")
    c, h, w = g.in_shape
    strided = False
    for i in refs:
        fc, fh, fw = g.layers[i].out_shape
        if (fh, fw) != (h, w):
            if len(refs) == 1 and wtype == "none" and _strided_ok((fh, fw), (h, w)):
                strided = True        # pjreddie's strided shortcut (ResNet cfgs)
                _warn(g, "from", f"from layer {i} is {fmt_shape(g.layers[i].out_shape)}, the previous layer "
                                 f"{fmt_shape(g.in_shape)}: using pjreddie's strided shortcut (current Darknet "
                                 f"rejects this cfg)")
            else:
                raise g.error(f"from layer {i} is {fmt_shape(g.layers[i].out_shape)} but the previous layer is "
                              f"{fmt_shape(g.in_shape)}: width/height must match", "from")
    alpha = s.get_float("alpha", 1.0)
    beta = s.get_float("beta", 1.0)
    n = len(refs)
    arrays = []
    if wtype in ("per_feature", "per_layer"):
        arrays = [ArraySpec("weights", (n + 1,), init=("const", 1.0))]
    elif wtype == "per_channel":
        arrays = [ArraySpec("weights", (n + 1, c), init=("const", 1.0))]
    bflops = c * h * w * n / 1e9 * (2 if wtype != "none" else 1)
    return g.layer((c, h, w), bflops, arrays, refs, activation=act, weights_type=wtype,
                   weights_normalization="relu" if wnorm == "avg_relu" else wnorm,
                   strided=strided, alpha=alpha, beta=beta,
                   strided_geometry=geometry.strided_shortcut((c, h, w), g.layers[refs[0]].out_shape) if strided
                   else None,
                   channels=[geometry.shortcut_channels(c, g.layers[i].out_shape[0]) for i in refs])


def _strided_ok(src, dst):
    (sh, sw), (dh, dw) = src, dst
    if sw >= dw:
        return sw % dw == 0 and sh % dh == 0 and sw // dw == sh // dh
    return dw % sw == 0 and dh % sh == 0 and dw // sw == dh // sh


@register("partial_shortcut")
def parse_partial_shortcut(g: Context) -> Layer:
    s = g.sec
    refs = g.refs("from")
    act = g.activation("linear")
    has_c, has_r = s.has("channels"), s.has("sparsity")
    if has_c and has_r:
        raise g.error("give at most one of 'channels' and 'sparsity'", "sparsity")
    c, h, w = g.in_shape
    fixed = None
    if has_c:
        fixed = s.get_int("channels")
        key = "channels"
    elif has_r:
        rho = s.get_float("sparsity")
        key = "sparsity"
        if not 0 < rho <= 1:
            raise g.error(f"sparsity={rho} must be in (0, 1]", "sparsity")
        fixed = int(math.floor(rho * c + 1e-9))
    chans = []
    for i in refs:
        fc, fh, fw = g.layers[i].out_shape
        if (fh, fw) != (h, w):
            raise g.error(f"from layer {i} is {fmt_shape(g.layers[i].out_shape)} but the previous layer is "
                          f"{fmt_shape(g.in_shape)}: width/height must match", "from")
        lim = geometry.shortcut_channels(c, fc)
        if fixed is not None:
            if fixed < 1 or fixed > lim:
                raise g.error(f"{key} gives c={fixed} channels, but it must be in 1..{lim} "
                              f"(previous layer {fmt_shape(g.in_shape)}, from layer {i} {fmt_shape((fc, fh, fw))})",
                              key)
            chans.append(fixed)
        else:
            chans.append(lim)
    bflops = sum(cs * h * w for cs in chans) / 1e9
    return g.layer((c, h, w), bflops, (), refs, activation=act, channels=chans)


@register("scale_channels")
def parse_scale_channels(g: Context) -> Layer:
    s = g.sec
    src = g.ref(s.get_int("from", required=True), "from")
    scale_wh = s.get_int("scale_wh", 0)
    act = g.activation("linear")
    fc, fh, fw = g.layers[src].out_shape
    if scale_wh:
        ok = g.in_shape[0] == 1 and g.in_shape[1:] == (fh, fw)
        want = f"1x{fh}x{fw}"
    else:
        ok = g.in_shape[0] == fc and g.in_shape[1:] == (1, 1)
        want = f"{fc}x1x1"
    if not ok:
        raise g.error(f"previous layer is {fmt_shape(g.in_shape)}, scale_channels from layer {src} "
                      f"({fmt_shape((fc, fh, fw))}) needs {want}", "from")
    return g.layer((fc, fh, fw), 0.0, (), [src], activation=act, scale_wh=scale_wh)


@register("sam")
def parse_sam(g: Context) -> Layer:
    src = g.ref(g.sec.get_int("from", required=True), "from")
    act = g.activation("linear")
    shape = g.layers[src].out_shape
    if shape != g.in_shape:
        raise g.error(f"previous layer is {fmt_shape(g.in_shape)} but from layer {src} is {fmt_shape(shape)}",
                      "from")
    return g.layer(shape, 0.0, (), [src], activation=act)


@register("upsample")
def parse_upsample(g: Context) -> Layer:
    g.need_image()
    stride = g.sec.get_int("stride", 2)
    scale = g.sec.get_float("scale", 1.0)
    if stride == 0:
        raise g.error("stride must not be 0", "stride")
    if stride > 0:
        shape = (g.c, g.h * stride, g.w * stride)
    else:
        shape = (g.c, g.h // -stride, g.w // -stride)
    return g.layer(shape, 0.0, stride=stride, scale=scale)


def _reorg_shape(g: Context):
    stride = g.sec.get_int("stride", 1)
    reverse = g.sec.get_int("reverse", 0)
    g.sec.touch("flatten", "extra")
    if stride < 1:
        raise g.error("stride must be >= 1", "stride")
    if reverse:
        if g.c % (stride * stride):
            raise g.error(f"reverse reorg needs channels ({g.c}) divisible by stride^2", "stride")
        return (g.c // (stride * stride), g.h * stride, g.w * stride), stride, reverse
    if g.h % stride or g.w % stride:
        raise g.error(f"input {fmt_shape(g.in_shape)} is not divisible by stride={stride}", "stride")
    return (g.c * stride * stride, g.h // stride, g.w // stride), stride, reverse


@register("reorg3d", "reorg")
def parse_reorg(g: Context) -> Layer:
    g.need_image()
    shape, stride, reverse = _reorg_shape(g)
    if g.sec.type == "reorg" and not reverse and g.c % (stride * stride):
        raise g.error(f"[reorg] needs channels ({g.c}) divisible by stride^2={stride * stride}", "stride")
    return g.layer(shape, 0.0, stride=stride, reverse=reverse)


_YOLO_TRAIN_KEYS = (
    "max", "jitter", "resize", "ignore_thresh", "truth_thresh", "iou_thresh", "random", "iou_loss",
    "iou_thresh_kind", "iou_normalizer", "obj_normalizer", "cls_normalizer", "delta_normalizer",
    "label_smooth_eps", "objectness_smooth", "counters_per_class", "max_delta", "focal_loss", "track_history_size",
    "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm", "embedding_layer", "map", "show_details",
    "beta1", "uc_normalizer", "yolo_point", "rescore", "bias_match", "absolute", "thresh", "class_scale",
    "coord_scale", "object_scale", "noobject_scale", "classfix", "log", "sqrt", "focus", "mask_scale",
)


def _anchors(g: Context, total: int):
    a = g.sec.get_floats("anchors")
    if a is None:
        return [0.5] * (2 * total)
    if len(a) < 2 * total:
        _warn(g, "anchors", f"anchors has {len(a)} values, {2 * total} are needed; Darknet fills the rest with 0.5")
        a = a + [0.5] * (2 * total - len(a))
    return a[:2 * total]


def _warn(g: Context, key: str, msg: str):
    line = g.sec.options[key].line if key in g.sec.options else g.sec.line
    warnings.warn(CfgWarning(f"{g.sec.path}:{line}: [{g.sec.name}] {msg}"), stacklevel=3)


def _yolo_common(g: Context):
    s = g.sec
    per_anchor = heads.per_box(s.type, 0)
    g.need_image()
    classes = s.get_int("classes", 20)
    total = s.get_int("num", 1)
    mask = s.get_ints("mask")
    if mask is None:
        mask = list(range(total))
    if any(m < 0 for m in mask):
        raise g.error(f"mask {mask} has a negative anchor index", "mask")
    anchors = _anchors(g, max(total, max(mask) + 1))
    if max(mask) >= total:
        _warn(g, "mask", f"mask {mask} refers to anchors beyond num={total}; using the anchors= values given")
    s.touch(*_YOLO_TRAIN_KEYS)
    need = len(mask) * (classes + per_anchor)
    if g.c != need:
        raise g.error(f"the previous layer has {g.c} channels but {len(mask)} anchors x (classes={classes} + "
                      f"{per_anchor}) = {need} are needed (filters= of the [convolutional] before it)")
    nms_kind = s.get_str("nms_kind", "default")
    if nms_kind not in ("default", "greedynms", "diounms", "cornersnms"):
        nms_kind = "default"
    p = dict(classes=classes, num=total, mask=mask, anchors=anchors,
             scale_x_y=s.get_float("scale_x_y", 1.0), new_coords=s.get_int("new_coords", 0),
             nms_kind=nms_kind, beta_nms=s.get_float("beta_nms", 0.6))
    p["layout"] = heads.layout(s.type, p)
    return p


@register("yolo")
def parse_yolo(g: Context) -> Layer:
    return g.layer(g.in_shape, **_yolo_common(g))


@register("gaussian_yolo")
def parse_gaussian_yolo(g: Context) -> Layer:
    p = _yolo_common(g)
    p["yolo_point"] = g.sec.get_str("yolo_point", "center")
    return g.layer(g.in_shape, **p)


def _resolve_file(g: Context, key):
    name = g.sec.get_str(key)
    if name is None:
        return None
    cands = [os.path.join(os.path.dirname(g.sec.path), name), name]
    for c in cands:
        if os.path.isfile(c):
            return c
    name = echo(name, quote=False)                 # (only messages repeat it from here: capped)
    _warn(g, key, f"{key}={name}: file not found (looked beside the cfg and in the current directory); "
                  f"the network can be summarised but not run")
    return "missing:" + name


def read_tree(path):
    """Darknet's ``read_tree``: lines ``name parent``; consecutive entries with one parent form a group.
    ``parent`` is read as ``sscanf("%d")`` does (no number: -1) and must be an earlier entry, else the file is
    not a tree (a one-line CfgError naming the file and line, never its content)."""
    parents, group_offset, group_size = [], [], []
    last = -1
    text = read_input(path, CfgError, "tree file", "a tree file", "tree file").decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        m = re.match(r"[+-]?\d+", parts[1]) if len(parts) > 1 else None
        parent = -1 if m is None else int(m.group()) if len(m.group()) < 12 else len(parents)  # (too long: bad)
        if not -1 <= parent < len(parents):
            raise CfgError("not a Darknet tree file: the parent index is not an earlier entry", path, lineno)
        if parent != last or not group_offset:
            group_offset.append(len(parents))
            group_size.append(0)
            last = parent
        group_size[-1] += 1
        parents.append(parent)
    return dict(n=len(parents), group_offset=group_offset, group_size=group_size, parent=parents)


def _tree(path):
    if path is None:
        return None
    if path.startswith("missing:"):
        return dict(missing=path[len("missing:"):])
    return read_tree(path)


@register("region")
def parse_region(g: Context) -> Layer:
    s = g.sec
    g.need_image()
    coords = s.get_int("coords", 4)
    classes = s.get_int("classes", 20)
    num = s.get_int("num", 1)
    softmax = s.get_int("softmax", 0)
    anchors = _anchors(g, num)
    tree_path = _resolve_file(g, "tree")
    s.touch(*_YOLO_TRAIN_KEYS)
    tree = _tree(tree_path)
    if tree is not None and "n" in tree and tree["n"] != classes:
        raise g.error(f"tree file {tree_path} has {tree['n']} entries but classes={classes}", "tree")
    need = num * (coords + 1 + classes)
    if g.c != need:
        raise g.error(f"the previous layer has {g.c} channels but num={num} x (coords={coords} + 1 + "
                      f"classes={classes}) = {need} are needed")
    p = dict(coords=coords, classes=classes, num=num, softmax=softmax, anchors=anchors, tree=tree,
             nms_kind="default", beta_nms=0.6)
    return g.layer(g.in_shape, layout=heads.layout("region", p), **p)


@register("detection")
def parse_detection(g: Context) -> Layer:
    s = g.sec
    coords = s.get_int("coords", 1)
    classes = s.get_int("classes", 1)
    num = s.get_int("num", 1)
    side = s.get_int("side", 7)
    softmax = s.get_int("softmax", 0)
    sqrt = s.get_int("sqrt", 0)
    s.touch(*_YOLO_TRAIN_KEYS, "forced", "scales", "reorg", "random")
    need = side * side * ((1 + coords) * num + classes)
    if g.inputs != need:
        raise g.error(f"the previous layer has {g.inputs} outputs but side={side}^2 x ((1 + coords={coords}) x "
                      f"num={num} + classes={classes}) = {need} are needed")
    p = dict(coords=coords, classes=classes, num=num, side=side, softmax=softmax, sqrt=sqrt)
    return g.layer((g.inputs, 1, 1), layout=heads.layout("detection", p), **p)


@register("softmax")
def parse_softmax(g: Context) -> Layer:
    s = g.sec
    groups = s.get_int("groups", 1)
    temperature = s.get_float("temperature", 1.0)
    spatial = s.get_int("spatial", 0)
    tree_path = _resolve_file(g, "tree")
    s.touch("noloss")
    tree = _tree(tree_path)
    if groups < 1 or g.inputs % groups:
        raise g.error(f"groups={groups} must divide the {g.inputs} inputs", "groups")
    shape = g.in_shape if spatial else (g.inputs, 1, 1)
    return g.layer(shape, groups=groups, temperature=temperature, spatial=spatial, tree=tree)


@register("cost")
def parse_cost(g: Context) -> Layer:
    g.sec.touch("type", "scale", "ratio", "noobject_scale", "thresh")
    return g.layer((g.inputs, 1, 1))


@register("contrastive")
def parse_contrastive(g: Context) -> Layer:
    s = g.sec
    s.touch("classes", "yolo_layer", "temperature", "cls_normalizer", "max_delta", "contrastive_neg_max")
    return g.layer(g.in_shape)


@register("crop")
def parse_crop(g: Context) -> Layer:
    s = g.sec
    g.need_image()
    ch = s.get_int("crop_height", 1)
    cw = s.get_int("crop_width", 1)
    noadjust = s.get_int("noadjust", 0)
    s.touch("flip", "angle", "saturation", "exposure", "shift")
    if ch > g.h or cw > g.w or ch < 1 or cw < 1:
        raise g.error(f"crop {cw}x{ch} does not fit the {g.w}x{g.h} input", "crop_height")
    return g.layer((g.c, ch, cw), noadjust=noadjust)


@register("dropout")
def parse_dropout(g: Context) -> Layer:
    g.sec.touch("probability", "dropblock", "dropblock_size_rel", "dropblock_size_abs")
    return g.layer(g.in_shape)


@register("empty")
def parse_empty(g: Context) -> Layer:
    return g.layer(g.in_shape)


@register("normalization")
def parse_normalization(g: Context) -> Layer:
    s = g.sec
    g.need_image()
    return g.layer(g.in_shape, alpha=s.get_float("alpha", 0.0001), beta=s.get_float("beta", 0.75),
                   kappa=s.get_float("kappa", 1.0), size=s.get_int("size", 5))


@register("batchnorm")
def parse_batchnorm(g: Context) -> Layer:
    c = g.c
    return g.layer(g.in_shape, 0.0, [ArraySpec("biases", (c,))] + bn_arrays("", c))


@register("activation")
def parse_activation(g: Context) -> Layer:
    return g.layer(g.in_shape, activation=g.activation("linear"))


@register("implicit")
def parse_implicit(g: Context) -> Layer:
    s = g.sec
    filters = s.get_int("filters", 128)
    atoms = s.get_int("atoms", 1)
    mean = s.get_float("mean", 0.0)
    s.touch("std")
    return g.layer((filters, atoms, 1), 0.0, [ArraySpec("weights", (filters, atoms, 1), init=("const", mean))])


@register("history")
def parse_history(g: Context) -> Layer:
    size = g.sec.get_int("history_size", 4)
    return g.layer((g.c * size, g.h, g.w), history_size=size)


# -- recurrent family (run by recurrent.py, one time step per call, state kept between calls) ---------------------------------------
@register("rnn")
def parse_rnn(g: Context) -> Layer:
    s = g.sec
    out = s.get_int("output", 1)
    hidden = s.get_int("hidden", 1)
    act = g.activation("logistic")
    bn = s.get_int("batch_normalize", 0)
    s.touch("logistic", "shortcut")
    arrays = (connected_arrays("input_layer.", g.inputs, hidden, bn, act)
              + connected_arrays("self_layer.", hidden, hidden, bn, act)
              + connected_arrays("output_layer.", hidden, out, bn, act))
    return g.layer((out, 1, 1), 0.0, arrays, activation=act)


@register("gru")
def parse_gru(g: Context) -> Layer:
    s = g.sec
    out = s.get_int("output", 1)
    bn = s.get_int("batch_normalize", 0)
    arrays = []
    for name in ("input_z", "input_r", "input_h"):
        arrays += connected_arrays(name + ".", g.inputs, out, bn, "linear")
    for name in ("state_z", "state_r", "state_h"):
        arrays += connected_arrays(name + ".", out, out, bn, "linear")
    return g.layer((out, 1, 1), 0.0, arrays)


@register("lstm")
def parse_lstm(g: Context) -> Layer:
    s = g.sec
    out = s.get_int("output", 1)
    bn = s.get_int("batch_normalize", 0)
    arrays = []
    for name in ("wf", "wi", "wg", "wo"):
        arrays += connected_arrays(name + ".", out, out, bn, "linear")
    for name in ("uf", "ui", "ug", "uo"):
        arrays += connected_arrays(name + ".", g.inputs, out, bn, "linear")
    return g.layer((out, 1, 1), 0.0, arrays)


def _rconv(s: Section, g: Context, default_act):
    size = s.get_int("size", 3)
    stride = s.get_int("stride", 1)
    dilation = s.get_int("dilation", 1)
    pad = s.get_int("pad", 0)
    padding = s.get_int("padding", 0)
    if pad:
        padding = size // 2
    groups = max(1, s.get_int("groups", 1))
    act = g.activation(default_act)
    bn = s.get_int("batch_normalize", 0)
    s.touch("xnor", "shortcut")
    c, h, w = g.in_shape
    if g.h < 1 or g.w < 1:
        c, h, w = g.inputs, 1, 1
    oh, ow = conv_geometry(h, w, size, stride, stride, padding)
    return dict(size=size, stride=stride, dilation=dilation, padding=padding, groups=groups, activation=act,
                bn=bn, conv_out=(oh, ow),
                pads=geometry.pads((h, w), (oh, ow), size, (stride, stride), padding * dilation, dilation)), \
        (c, h, w), (oh, ow)


def _check_groups(g: Context, groups: int, name: str, ci: int, co: int):
    if ci % groups or co % groups:
        raise g.error(f"groups={groups} must divide the channels of its {name} convolution ({ci} -> {co})", "groups")


@register("crnn")
def parse_crnn(g: Context) -> Layer:
    s = g.sec
    out = s.get_int("output", 1)
    hidden = s.get_int("hidden", 1)
    p, (c, h, w), (oh, ow) = _rconv(s, g, "logistic")
    size, groups = p["size"], p["groups"]
    arrays, bflops = [], 0.0
    for name, ci, co in (("input_layer", c, hidden), ("self_layer", hidden, hidden), ("output_layer", hidden, out)):
        _check_groups(g, groups, name, ci, co)
        arrays += conv_arrays(name + ".", ci, co, groups, size, p["bn"], p["activation"])
        bflops += 2.0 * (ci // groups) * co * size * size * oh * ow / 1e9
    return g.layer((out, oh, ow), bflops, arrays, **p)


@register("conv_lstm")
def parse_conv_lstm(g: Context) -> Layer:
    s = g.sec
    out = s.get_int("output", 1)
    peephole = s.get_int("peephole", 0)
    bottleneck = s.get_int("bottleneck", 0)
    s.touch("state_constrain", "lstm_activation", "time_normalizer")
    p, (c, h, w), (oh, ow) = _rconv(s, g, "linear")
    size, groups, bn = p["size"], p["groups"], p["bn"]
    convs = []
    if peephole:
        convs += [(n, out, out) for n in ("vf", "vi", "vo")]
    convs.append(("wf", out * 2 if bottleneck else out, out))
    if not bottleneck:
        convs += [(n, out, out) for n in ("wi", "wg", "wo")]
    convs += [(n, c, out) for n in ("uf", "ui", "ug", "uo")]
    arrays, bflops = [], 0.0
    for name, ci, co in convs:
        _check_groups(g, groups, name, ci, co)
        arrays += conv_arrays(name + ".", ci, co, groups, size, bn, "linear")
        bflops += 2.0 * (ci // groups) * co * size * size * oh * ow / 1e9
    bflops += (9 if bottleneck else 12) * out * oh * ow / 1e9
    return g.layer((out, oh, ow), bflops, arrays, **p)


# ----------------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------------
_NET_KEYS = (
    "batch", "max_batches", "learning_rate", "learning_rate_min", "sgdr_cycle", "sgdr_mult", "momentum", "decay",
    "subdivisions", "time_steps", "track", "augment_speed", "init_sequential_subdivisions",
    "sequential_subdivisions", "try_fix_nan", "weights_reject_freq", "equidistant_point",
    "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "ema_alpha", "loss_scale",
    "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "max_crop",
    "min_crop", "flip", "blur", "gaussian_noise", "mixup", "cutmix", "mosaic", "mosaic_bound", "contrastive",
    "contrastive_jit_flip", "contrastive_color", "unsupervised", "label_smooth_eps", "resize_step", "attention",
    "adversarial_lr", "max_chart_loss", "angle", "aspect", "saturation", "exposure", "hue", "power", "policy",
    "burn_in", "step", "scale", "steps", "scales", "seq_scales", "gamma", "random", "center",
)


def _parse_net(sec: Section, width, height) -> dict:
    w = sec.get_int("width", 0)
    h = sec.get_int("height", 0)
    c = sec.get_int("channels", 0)
    inputs = sec.get_int("inputs", 0)
    letter_box = sec.get_int("letter_box", 0)
    sec.touch(*_NET_KEYS)
    w = w if width is None else int(width)
    h = h if height is None else int(height)
    if w < 0 or h < 0 or c < 0:
        raise sec.error("width, height and channels must not be negative")
    if max(w, h, c) > INT_MAX:
        raise sec.error(f"width={w}, height={h}, channels={c}: more than a C int holds")
    if w and h and c:
        shape = (c, h, w)
    elif inputs or (w * h * c):
        shape = (inputs or w * h * c, 1, 1)
    else:
        raise sec.error("needs width, height and channels (or inputs)")
    return dict(width=w, height=h, channels=c, inputs=inputs or w * h * c, letter_box=letter_box,
                input_shape=shape)


def build_network(sections: list, width=None, height=None, path: str = "<cfg>", warn: bool = True) -> Network:
    """Shape inference over parsed sections. ``width``/``height`` override ``[net]``."""
    net = _parse_net(sections[0], width, height)
    if warn:
        warn_unused(sections[0])
    layers: list[Layer] = []
    shape = net["input_shape"]
    for i, sec in enumerate(sections[1:]):
        g = Context(sec, i, shape, layers, net)
        sec.touch(*_GENERIC_KEYS)
        layer = PARSERS[sec.type](g)
        if warn:
            warn_unused(sec)
        layers.append(layer)
        shape = layer.out_shape
    if not layers:
        raise CfgError("the cfg has no layers after [net]", path)
    return Network(path, net, layers)


def load_network(path, width=None, height=None, warn: bool = True) -> Network:
    path = os.fspath(path)
    return build_network(read_cfg(path), width, height, path, warn)


def network_from_text(text: str, width=None, height=None, path="<cfg>", warn: bool = True) -> Network:
    return build_network(read_cfg_text(text, path), width, height, path, warn)
