"""The inference fast path: a plan compiled from a :class:`~darknet_prn.model.Darknet` for eval-mode ``forward``.

``Darknet.forward`` in eval mode runs a :class:`FastPlan` instead of the layer modules one by one. The plan is
built lazily from ``net.graph.layers`` and the modules' tensors, and rebuilt automatically when any parameter
or buffer changes (``load_weights``, ``load_state_dict``, an optimizer step, ``.to()``: every in-place write
bumps a tensor's version counter, and the plan keeps a fingerprint of ``(data_ptr, _version)`` of all of them).

What the plan does differently from the exact per-module path (numbers: ``docs/performance.md``):

* batch normalisation folded into the convolution (``w' = w*s/sqrt(v+eps)``, ``b' = b - m*s/sqrt(v+eps)``,
  the factors computed in float64), so a conv + BN + activation is one kernel instead of five passes
  over the output;
* the activation fused into the convolution as a oneDNN post-op (``torch.ops.mkldnn._convolution_pointwise``
  with the weights pre-packed once into oneDNN's blocked layout) for linear, relu, leaky, logistic, tanh,
  swish, relu6 and hardtan; other activations run in place on the conv output (mish through the C kernel,
  ``native.mish_inplace``, 5.8x torch's ``F.mish``);
* a 1x1 convolution whose only reader is a ``[yolo]`` head, at 40x40 cells or more, as one GEMM straight into
  the NCHW layout the head works in (no transposing copy of its 255 channels), the head then in place on it;
* activations laid out channels-last (NHWC) through convolutions, max-pools, routes, shortcuts and
  upsampling, the layout oneDNN's direct convolutions and torch's pooling kernels are fastest in;
* max-pools whose windows lie inside the image (the 2x2/2 pools of the tiny YOLOs) as a separable max over
  strided views, 2-3x faster than ``max_pool2d``'s channels-last kernel; other max-pools through torch's
  implicit ``-inf`` padding (plus an output offset) instead of a padded copy where the windows allow it, and the
  stride-1 pools of SPP blocks (5/9/13) as a window max by doubling along each axis;
* yolo heads, shortcuts and activations in place on buffers the plan itself just allocated;
* every intermediate output dropped as soon as no later layer reads it, its memory kept in the process heap
  for the next forward (``allocator.keep_freed_memory``);
* a large batch run in chunks of images whose activations fit in the last-level cache.

``Darknet.forward`` runs the plan under ``torch.no_grad()`` (not ``inference_mode``: the outputs stay ordinary
tensors that later autograd code may use; the difference is not measurable here), so eval-mode outputs carry no
autograd history; training mode, ``set_backend("exact")`` or an input that requires grad use the modules.

Layers without a specialised step (yolo heads, region, reorg, ...) run their own module on NCHW-contiguous
inputs, so the plan computes exactly what the modules compute, up to float32 rounding of the fused
arithmetic (well inside the oracle tolerance; ``tests/test_fast.py``).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import geometry, native
from .activations import TABLE as ACTIVATIONS, activate_inplace
from .allocator import keep_freed_memory
from .engines import ONNX_BACKENDS, openvino_model, ort_session
from .errors import DarknetError
from .graph import STATEFUL_TYPES
from .modules import blur, fold_bn, route_inputs
from .precision import compute_dtype
from .registry import Registry

CL = torch.channels_last

# layer type -> lowering ``fn(plan, layer, module) -> _Step``; a type without one runs its reference module
LOWERINGS = Registry("fast-plan lowerings")
lower = LOWERINGS.register

def act_inplace(y, name):
    """The activation in place on a buffer the plan just made: Darknet's mish through the C kernel (oneDNN has no
    mish post-op in torch, and F.mish takes ~4 ns a value on one core, the kernel ~0.7; a bf16 buffer goes through
    float32 and back, 12.9 -> 4.2 ms for 2.77 M values, the same bits as bf16 F.mish), the rest from the table."""
    if name == "mish":
        if native.mish_inplace(y) is not None:
            return y
        if y.dtype == torch.bfloat16 and y.device.type == "cpu":
            f = y.float()
            if native.mish_inplace(f) is not None:
                return y.copy_(f)
    return activate_inplace(y, name)


def mkldnn_ok() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def fingerprint(net):
    """Identity + version of every tensor the plan was built from (changes on any in-place write): the arena's
    version while every array is still its view (one counter for all), else each tensor's."""
    arena = getattr(net, "_arena", None)
    if arena is not None and arena.valid():
        return arena.fingerprint()
    return tuple((t.data_ptr(), t._version) for t in _tensors(net))


def _tensors(net):
    yield from net.parameters()
    yield from net.buffers()


def _pool_fit(n, out, size, stride, left):
    """Torch max-pool padding ``q`` (implicit -inf, ``q <= size // 2``) and output offset ``o`` such that torch's
    windows ``o .. o + out - 1`` are Darknet's windows starting at ``j * stride - left``; None if there is none."""
    for q in range(max(left, 0), size // 2 + 1):
        if (q - left) % stride:
            continue
        o = (q - left) // stride
        if (n + 2 * q - size) // stride + 1 >= o + out:
            return q, o
    return None


def _window_max(x, size, dim, out):
    """``out`` maxima over windows ``[j, j + size)`` along ``dim`` (stride 1): window lengths doubled 1, 2, 4, ...
    then one last overlapping step to ``size``; max is exact, so this equals a direct max-pool bit for bit."""
    m, n = x, 1
    while 2 * n <= size:
        k = m.shape[dim] - n
        m = torch.maximum(m.narrow(dim, 0, k), m.narrow(dim, n, k))
        n *= 2
    if n < size:
        k = m.shape[dim] - (size - n)
        m = torch.maximum(m.narrow(dim, 0, k), m.narrow(dim, size - n, k))
    return m.narrow(dim, 0, out)


def _none():
    return None


def _cache_bytes() -> int:
    """The largest CPU cache (Linux sysfs), else 32 MiB."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            with open(os.path.join(base, d, "size")) as f:
                v = f.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(v[-1:], 1)
            best = max(best, int(v.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        pass
    return best or (32 << 20)


class _NotCopied:
    """A plan holds oneDNN-packed tensors or an engine session: copies and pickles of a Darknet drop it (it is
    rebuilt lazily)."""

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (_none, ())


class _Step:
    __slots__ = ("index", "fn", "kind")

    def __init__(self, index, fn, kind):
        self.index = index
        self.fn = fn
        self.kind = kind

    def __repr__(self):
        return f"{self.index}:{self.kind}"


class FastPlan(_NotCopied):
    """A compiled inference plan for one :class:`Darknet` (its current weights, device and dtype).

    ``plan(x)`` returns the network outputs like ``Darknet.forward``; run it under ``torch.no_grad()``.
    The switches exist for the ablation in ``benchmarks/latency.py --ablation``: ``channels_last`` (NHWC
    activations), ``fuse`` (oneDNN conv with fused activation and pre-packed weights, else ``F.conv2d`` plus an
    in-place activation), ``pool`` (separable max-pool), ``chunk`` (images per chunk; None: from the cache size).
    ``precision`` (``darknet_prn.precision``): ``"bf16"``/``"fp16"`` run the convolutions (weights packed once) and
    the activations between them in that dtype; the yolo heads, other module layers and the outputs stay float32."""

    def __init__(self, net, channels_last: bool = True, fuse: bool = True, pool: bool = True, chunk=None,
                 precision: str = "f32"):
        ps = list(_tensors(net))
        self.device = ps[0].device if ps else torch.device("cpu")
        self.dtype = ps[0].dtype if ps else torch.float32
        self.precision = precision
        cdt = compute_dtype(precision, self.device)
        self.cdt = self.dtype if precision == "f32" else cdt     # the dtype convolutions compute in
        self.low = self.cdt != self.dtype
        self.onednn = fuse and self.device.type == "cpu" and self.dtype == torch.float32 and mkldnn_ok()
        self.channels_last = channels_last and self.device.type == "cpu"
        if self.device.type == "cpu":
            keep_freed_memory()       # freed activations stay in the heap: no page faults in the next forward
        self.separable_pool = pool
        self.backend = "torch"
        self.threads = None
        self.output_layers = list(net.output_layers)
        self.fingerprint = fingerprint(net)
        self.steps = []
        self.input_shape = tuple(net.graph.input_shape)
        self._layers = net.graph.layers
        self.needed, self.free_after = net.graph.liveness()   # keep an output until its last reader ran
        self._private = set()       # layers whose plan output is a fresh NCHW buffer only the next layer reads
        with torch.no_grad():
            for l, m in zip(net.graph.layers, net.layers):
                self.steps.append(self._compile(l, m, net))
        # batch chunk: as many images as keep the largest activation within half the last-level cache
        big = max((4 * l.outputs for l in net.graph.layers), default=1)
        self.chunk = int(chunk) if chunk else max(1, (_cache_bytes() // 2) // max(big, 1))
        if any(l.type in STATEFUL_TYPES for l in net.graph.layers):
            self.chunk = 1 << 62      # recurrent state: a chunked batch would look like successive time steps

    # -- compilation -------------------------------------------------------------------------------------
    def _compile(self, l, m, net):
        lowering = LOWERINGS.get(l.type)
        return lowering(self, l, m) if lowering is not None else self._module(l, m)

    @lower("dropout", "empty")
    def _identity(self, l, m):
        return _Step(l.index, lambda x, outs: x, l.type)

    def _module(self, l, m):
        """Any other layer: its own module on NCHW-contiguous inputs (exactly the exact path)."""
        refs = list(l.refs) if l.type != "convolutional" else []

        if self.low:      # reduced precision: the module runs in the parameters' dtype
            dt = self.dtype

            def run(x, outs, m=m, refs=refs):
                o = {r: outs[r].to(dt).contiguous() for r in refs}
                return m(x.to(dt).contiguous(), o)
            return _Step(l.index, run, l.type)

        def run(x, outs, m=m, refs=refs):
            o = {r: outs[r].contiguous() for r in refs}
            return m(x.contiguous(), o)
        return _Step(l.index, run, l.type)

    @lower("convolutional")
    def _conv(self, l, m):
        p = l.p
        if p["xnor"] or p["binary"]:
            return self._module(l, m)
        w, b, scale, mean, var = m.tensors()
        if p["bn"]:
            # per-channel factors in float64, rounded once; the weight product in the weights' dtype (<= 1 ulp
            # from the float64 product, and no float64 copy of yolov4's 64M weights)
            wf, bf = fold_bn(w, b, scale, mean, var)
        else:
            wf, bf = w.detach().clone(), b.detach().clone()
        act = m.act
        c, h, wd = l.in_shape
        oh, ow = p["conv_out"]
        k, d, g = p["size"], p["dilation"], p["groups"]
        sy, sx = p["stride_y"], p["stride_x"]
        # torch's symmetric padding (ty, tx) gives Darknet's windows (same start, zeros outside the image);
        # extra rows/columns at the far end are cropped
        (ty, tx), _ = geometry.symmetric(p["pads"])
        th = geometry.window_out(h, k, sy, 2 * ty, d)
        tw = geometry.window_out(wd, k, sx, 2 * tx, d)
        aa = p["antialiasing"]
        crop = (th, tw) != (oh, ow)
        cdt, low = self.cdt, self.low
        if low:
            wf = wf.to(cdt)

        def finish(y):
            if crop:
                y = y[:, :, :oh, :ow]
            if aa:
                y = blur(y, p["blur_size"], p["blur_pad"], p["blur_stride"])
            return y
        if ty < 0 or tx < 0 or th < oh or tw < ow:
            # cropping geometry: the module's padding logic with the folded weights
            def run(x, outs, m=m, wf=wf, bf=bf, act=act):
                if low and x.dtype != cdt:
                    x = x.to(cdt)
                y = act_inplace(m.conv(x, wf).add_(bf.view(1, -1, 1, 1)), act)
                return blur(y, p["blur_size"], p["blur_pad"], p["blur_stride"]) if aa else y
            return _Step(l.index, run, "conv(generic)")
        pad, stride, dil = [ty, tx], [sy, sx], [d, d]
        nxt = self._layers[l.index + 1] if l.index + 1 < len(self._layers) else None
        if self.onednn and not low and k == 1 and (sy, sx, ty, tx, g) == (1, 1, 0, 0, 1) and not (crop or aa) \
                and nxt is not None and nxt.type == "yolo" and l.index not in self.needed and oh * ow >= 1600:
            # a 1x1 conv whose only reader is a [yolo] head: one GEMM straight into the NCHW layout the head
            # and the network output use (W[co, c] @ X[n, c, hw] over the channels-last input), instead of a
            # channels-last conv and a transposing copy of 255 channels: 4.8 -> 3.7 ms for yolov7-tiny's 52x52
            # head on one thread; no gain at 26x26 and a loss at 13x13, where the copy stays in cache
            w2, b2, co = wf.reshape(wf.shape[0], -1).contiguous(), bf.view(-1, 1), wf.shape[0]
            self._private.add(l.index)

            def run(x, outs, w2=w2, b2=b2, act=act):
                n = x.shape[0]
                if not x.is_contiguous(memory_format=CL):
                    x = x.contiguous(memory_format=CL)
                xt = x.permute(0, 2, 3, 1).reshape(n, h * wd, c).transpose(1, 2)
                if n == 1:
                    y = torch.addmm(b2, w2, xt[0]).unsqueeze(0)
                else:
                    y = torch.matmul(w2, xt).add_(b2)
                return act_inplace(y.view(n, co, oh, ow), act)
            return _Step(l.index, run, "conv1x1(gemm->nchw)")
        if self.onednn:
            packed = torch.ops.mkldnn._reorder_convolution_weight(wf.contiguous(), pad, stride, dil, g, [1, c, h, wd])
            fused = ACTIVATIONS[act].onednn           # the activation as a oneDNN post-op, else in place after
            attr, scalars = fused or ("none", [])
            rest = None if fused else act
            conv = torch.ops.mkldnn._convolution_pointwise
            cl = self.channels_last

            def run(x, outs, packed=packed, bf=bf, attr=attr, scalars=scalars, rest=rest):
                if low and x.dtype != cdt:
                    x = x.to(cdt)
                if cl and not x.is_contiguous(memory_format=CL):
                    x = x.contiguous(memory_format=CL)
                y = conv(x, packed, bf, pad, stride, dil, g, attr, scalars, "")
                if rest is not None:
                    y = act_inplace(y, rest)
                return finish(y) if crop or aa else y
            return _Step(l.index, run, f"conv+{attr}" + (f"+{rest}" if rest else ""))
        if self.channels_last:
            wf = wf.contiguous(memory_format=CL)
        if low:
            bf = bf.to(cdt)

        def run(x, outs, wf=wf, bf=bf, act=act):
            if low and x.dtype != cdt:
                x = x.to(cdt)
            y = act_inplace(F.conv2d(x, wf, bf, stride, pad, dil, g), act)
            return finish(y) if crop or aa else y
        return _Step(l.index, run, "conv")

    @lower("maxpool")
    def _maxpool(self, l, m):
        p = l.p
        if p["maxpool_depth"] or p["antialiasing"]:
            return self._module(l, m)
        c, h, w = l.in_shape
        oh, ow = p["pool_out"]
        size, sy, sx = p["size"], p["stride_y"], p["stride_x"]
        ty, tx, by, bx = p["pads"]
        if size == 1 and sy == sx == 1 and (h, w) == (oh, ow):
            return _Step(l.index, lambda x, outs: x, "maxpool(identity)")
        if self.separable_pool and ty == 0 and tx == 0 and (oh - 1) * sy + size <= h and \
                (ow - 1) * sx + size <= w and size <= 3:
            # every window inside the image: separable max over strided views (2 x (size-1) elementwise
            # maxima; 2-3x faster than max_pool2d's channels-last kernel for the 2x2/2 pools of tiny YOLOs)
            ey, ex = (oh - 1) * sy + 1, (ow - 1) * sx + 1

            def run(x, outs):
                r = x[:, :, 0:ey:sy]
                for i in range(1, size):
                    r = torch.maximum(r, x[:, :, i:i + ey:sy])
                y = r[:, :, :, 0:ex:sx]
                for i in range(1, size):
                    y = torch.maximum(y, r[:, :, :, i:i + ex:sx])
                return y
            return _Step(l.index, run, "maxpool(separable)")
        if self.separable_pool and sy == sx == 1 and size > 3 and max(ty, tx) < size and \
                oh - 1 - ty < h and ow - 1 - tx < w and ty + h + by - size >= oh - 1 and \
                tx + w + bx - size >= ow - 1:
            # stride 1, large windows whose every window meets the image (the SPP pools 5/9/13 of yolov4/yolov7):
            # -inf padding, then the window max
            # along each axis by doubling (log2(size) + 1 elementwise maxima per axis instead of size^2
            # comparisons per output; 0.69 -> 0.19 ms for 13x13 on 256x13x13)
            pads = (tx, bx, ty, by)

            def run(x, outs):
                xp = F.pad(x, pads, value=float("-inf")) if any(pads) else x
                return _window_max(_window_max(xp, size, 2, oh), size, 3, ow)
            return _Step(l.index, run, "maxpool(doubling)")
        fit = _pool_fit(h, oh, size, sy, ty), _pool_fit(w, ow, size, sx, tx)
        if None not in fit:
            (qy, oy), (qx, ox) = fit
            th = geometry.window_out(h, size, sy, 2 * qy)
            tw = geometry.window_out(w, size, sx, 2 * qx)
            crop = (oy, ox, th, tw) != (0, 0, oh, ow)

            def run(x, outs):
                y = F.max_pool2d(x, size, (sy, sx), (qy, qx))
                return y[:, :, oy:oy + oh, ox:ox + ow] if crop else y
            return _Step(l.index, run, "maxpool")
        pads = (tx, bx, ty, by)

        def run(x, outs):
            xp = F.pad(x, pads, value=float("-inf"))
            return F.max_pool2d(xp, size, (sy, sx))[:, :, :oh, :ow]
        return _Step(l.index, run, "maxpool(pad)")

    @lower("route")
    def _route(self, l, m):
        slices, groups = l.p["slices"], l.p["groups"]

        def run(x, outs):
            parts = route_inputs(outs, slices, groups)
            if len(parts) == 1:
                return parts[0]
            if self.channels_last:
                return torch.cat([q.contiguous(memory_format=CL) for q in parts], 1)
            return torch.cat(parts, 1)
        return _Step(l.index, run, "route")

    @lower("shortcut")
    def _shortcut(self, l, m):
        p = l.p
        c, h, w = l.out_shape
        if p["strided"] or p["weights_type"] != "none" or \
                any(self._layers[r].out_shape[1:] != (h, w) for r in l.refs):
            return self._module(l, m)
        act = p["activation"]
        # (ref, channels added): Darknet adds the leading min(c, c_ref) channels (modules.add_leading)
        adds = [(r, ch, self._layers[r].out_shape[0]) for r, ch in zip(l.refs, p["channels"])]

        def run(x, outs):
            y = None
            for r, ch, rc in adds:
                f = outs[r]
                if rc > ch:
                    f = f[:, :ch]
                if y is None and ch == c:
                    y = torch.add(x, f)
                    continue
                if y is None:
                    y = x.clone(memory_format=CL) if self.channels_last else x.clone()
                if ch == c:
                    y.add_(f)
                else:
                    y[:, :ch].add_(f)
            return act_inplace(y, act)
        return _Step(l.index, run, "shortcut")

    @lower("yolo")
    def _yolo(self, l, m):
        """[yolo] in place on an NCHW copy: logistic on x, y, objectness and classes, then scale_x_y."""
        A, per, sc, new_coords = l.p["layout"].anchors, l.p["layout"].per, l.p["scale_x_y"], l.p["new_coords"]

        dt = self.dtype
        private = l.index - 1 in self._private     # the input is a buffer no one else reads: work on it in place

        def run(x, outs):
            y = x.to(dt).contiguous()        # float32 heads in a reduced-precision plan
            if y.data_ptr() == x.data_ptr() and not private:
                y = y.clone()
            n, c, h, w = y.shape
            v = y.view(n, A, per, h, w)
            if not new_coords:
                v[:, :, 0:2].sigmoid_()
                v[:, :, 4:].sigmoid_()
            if sc != 1:
                v[:, :, 0:2].mul_(sc).sub_(0.5 * (sc - 1))
            return y
        return _Step(l.index, run, "yolo")

    @lower("upsample")
    def _upsample(self, l, m):
        s = l.p["stride"]
        if s <= 1 or l.p["scale"] != 1:
            return self._module(l, m)

        def run(x, outs):
            return F.interpolate(x, scale_factor=float(s), mode="nearest")
        return _Step(l.index, run, "upsample")

    # -- execution ---------------------------------------------------------------------------------------
    def __call__(self, x):
        n, k = x.shape[0], self.chunk
        if n <= k:
            return self._run(x)
        # image chunks: a chunk's activations stay in the last-level cache (10-40% faster at batch 8)
        parts = [self._run(x[i:i + k]) for i in range(0, n, k)]
        return [torch.cat(z) for z in zip(*parts)]

    def _run(self, x):
        if self.channels_last and x.dim() == 4 and not x.is_contiguous(memory_format=CL):
            x = x.contiguous(memory_format=CL)
        outs = {}
        needed, free_after = self.needed, self.free_after
        for st in self.steps:
            x = st.fn(x, outs)
            i = st.index
            if i in needed:
                outs[i] = x
            fa = free_after.get(i)
            if fa:
                for r in fa:
                    del outs[r]
        if self.low:
            return [outs[i].to(self.dtype).contiguous() for i in self.output_layers]
        return [outs[i].contiguous() for i in self.output_layers]


# ---------------------------------------------------------------------------------------------------------------
# ONNX Runtime / OpenVINO backends: the network exported by darknet_prn.export (BN folded, static shapes) and run
# by the other engine. Selectable with Darknet.set_backend(); not the default (docs/performance.md says why).

class OnnxPlan(_NotCopied):
    """The exported ONNX graph of ``net`` in ONNX Runtime or OpenVINO (CPU, float32, dynamic batch)."""

    def __init__(self, net, engine: str, threads: int | None = None, precision: str = "f32", model=None):
        import tempfile
        from .precision import check_backend_precision
        if engine not in ONNX_BACKENDS:
            raise DarknetError(f"unknown ONNX backend '{engine}' ({', '.join(ONNX_BACKENDS)})")
        check_backend_precision(engine, precision, "cpu")
        self.backend = engine
        self.precision = precision
        self.model = model
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.threads = int(threads or torch.get_num_threads())
        self.fingerprint = fingerprint(net)
        with tempfile.TemporaryDirectory(prefix="darknet-prn-") as d:
            if model is not None:       # a given ONNX file (e.g. darknet_prn.quantize's int8 model)
                from .export import check_onnx_heads
                path = check_onnx_heads(net, model)
            else:
                path = os.path.join(d, "model.onnx")
                net.export_onnx(path, dynamic_batch=True, verify=False)
            if engine == "onnxruntime":
                sess = ort_session(path, self.threads)
                name = sess.get_inputs()[0].name
                self._run = lambda a: sess.run(None, {name: a})
            else:
                cm = openvino_model(path, self.threads, precision)
                req = cm.create_infer_request()
                outs = list(cm.outputs)
                self._run = lambda a: [req.infer({0: a})[o] for o in outs]

    def __call__(self, x):
        a = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return [torch.from_numpy(o.copy()) for o in self._run(a)]
