"""Forward passes of Darknet's recurrent layers: ``[rnn]``, ``[crnn]``, ``[gru]``, ``[lstm]``, ``[conv_lstm]``.

Transcribed from AlexeyAB darknet's CPU code (src/rnn_layer.c ``forward_rnn_layer``, src/crnn_layer.c
``forward_crnn_layer``, src/gru_layer.c ``forward_gru_layer``, src/lstm_layer.c ``forward_lstm_layer``,
src/conv_lstm_layer.c ``forward_conv_lstm_layer``); the sub-layers are ``forward_connected_layer`` (BN before the
bias, as :class:`modules.Connected`) and ``forward_convolutional_layer`` (as :class:`modules.Convolutional`, BN
unfused).

**One forward is one time step.** Darknet runs a network with ``time_steps=1`` at inference (detector test /
``network_predict`` parse the net with batch=1, steps=1), and it never clears a recurrent layer's state between
``network_predict`` calls: successive inputs form a sequence whose state starts at 0. These modules do the same:
each keeps its state (a plain attribute, not a buffer, so it is neither in ``state_dict`` nor in the fast plan's
fingerprint), starting at zeros, and every eval-mode forward reads it and stores the new one. ``reset_state()``
starts a new sequence. A batch-size change also resets the state (Darknet's state is sized per batch); a
device/dtype change moves it. Each image of a batch is its own sequence, so a batch must reach the module whole:
a caller that splits a batch into chunks would see a reset at every chunk-size change.

Training mode follows Darknet's ``state.train`` branches with steps=1: ``[rnn]``/``[crnn]`` zero the state at the
start of every forward (and keep nothing); ``[gru]``/``[lstm]``/``[conv_lstm]`` carry their state across calls,
detached from the autograd graph.

Activations: ``[rnn]``/``[crnn]`` sub-layers use the layer's ``activation``, except the rnn ``self_layer``, which
uses ``logistic`` when ``logistic=1`` and ``loggy`` when ``logistic=2`` (make_rnn_layer's ``log`` argument).
``[gru]``/``[lstm]`` sub-layers are LINEAR connected layers; gates are ``logistic``, the lstm candidate and cell
output ``tanh`` (``[conv_lstm]`` likewise, its convolutions using the layer's activation). The gru candidate ``h``
is ``logistic``: ``USET`` (which would select ``tanh``) is defined only in rnn_layer.h, which gru_layer.c does not
include.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import modules
from .activations import activate
from .errors import CfgError


class _Recurrent(modules.DarknetModule):
    """Base: state kept between calls (see the module docstring)."""

    def __init__(self, layer):
        super().__init__(layer)
        self.p = layer.p
        self.out_shape = tuple(layer.out_shape)
        self.in_shape = tuple(layer.in_shape)
        self.where = (layer.section.path, layer.section.line, layer.section.name)
        self.bn = any(a.name.endswith(".scales") for a in layer.arrays)     # batch_normalize=1 (every sub-layer)
        self.outputs = self.out_shape[0]
        self._state = {}

    def reset_state(self):
        """Forgets the carried state: the next forward starts a new sequence from zeros (as a fresh Darknet net)."""
        self._state = {}

    def _get(self, name, shape, like):
        t = self._state.get(name)
        if t is None or tuple(t.shape) != tuple(shape):
            if t is not None:                   # batch size changed: a new state, as Darknet's is sized per batch
                self._state = {}
            return like.new_zeros(shape)
        if t.device != like.device or t.dtype != like.dtype:
            t = t.to(device=like.device, dtype=like.dtype)
        return t

    def _put(self, **tensors):
        self._state.update({k: v.detach() for k, v in tensors.items()})

    def _emit(self, y, **state):
        """Keeps the new ``state`` (entries that are None are not kept) and returns ``y`` as Darknet's flat
        ``(N, outputs, 1, 1)`` output."""
        self._put(**{k: v for k, v in state.items() if v is not None})
        return y.view(y.shape[0], -1, 1, 1)

    def _connected(self, prefix, x, act="linear"):
        """forward_connected_layer of sub-layer ``prefix`` on a (N, inputs) matrix."""
        y = F.linear(x, getattr(self, prefix + "_weights"))
        if self.bn:
            g = lambda n: getattr(self, prefix + "_" + n)     # noqa: E731
            y = modules.batchnorm(y, g("rolling_mean"), g("rolling_variance"), g("scales"),
                                  torch.zeros_like(g("biases")))
        y = y + getattr(self, prefix + "_biases")
        return activate(y, act)

    def _gate(self, a, x, b, s):
        """The sum of connected sub-layer ``a`` on the input ``x`` and sub-layer ``b`` on the state ``s``."""
        return self._connected(a, x) + self._connected(b, s)

    def _setup_conv(self, layer):
        """Geometry of the convolutional sub-layers ([crnn], [conv_lstm]): all share size/stride/pad/dilation/groups,
        the layer's activation and BN."""
        p = layer.p
        self.bn = p["bn"]
        self.act = p["activation"]
        self.xnor = layer.section.get_int("xnor", 0)
        c, h, w = self.in_shape
        if h < 1 or w < 1:
            c, h, w = c * max(h, 1) * max(w, 1), 1, 1
        self.chw = (c, h, w)

    def _check_conv(self):
        c, h, w = self.chw
        oh, ow = self.out_shape[1:]
        if (oh, ow) != (h, w):
            self._fail(f"runs only with a size-preserving convolution (input {w}x{h}, output {ow}x{oh}): Darknet "
                       f"feeds the {ow}x{oh} state to sub-layers built for a {w}x{h} input and asserts the sizes agree")
        if self.xnor:
            self._fail("xnor=1 is not supported in recurrent layers")

    def _conv(self, prefix, x):
        """forward_convolutional_layer of sub-layer ``prefix`` (BN unfused, as Darknet: only top-level
        [convolutional] layers are fused)."""
        g = lambda n: getattr(self, prefix + "_" + n)     # noqa: E731
        p = self.p
        y = modules.window_conv(x, g("weights"), p["pads"], (p["stride"], p["stride"]), p["dilation"], p["groups"],
                                p["conv_out"])
        if self.bn:
            y = modules.batchnorm(y, g("rolling_mean"), g("rolling_variance"), g("scales"), g("biases"))
        else:
            y = y + g("biases").view(1, -1, 1, 1)
        return activate(y, self.act)

    def _fail(self, why):
        path, line, name = self.where
        raise CfgError(f"[{name}] {why}", path, line)


@modules.register("rnn")
class RNN(_Recurrent):
    """forward_rnn_layer (steps=1)::

        in   = input_layer(x)                   # connected inputs->hidden, activation
        self = self_layer(state)                # connected hidden->hidden, activation (or logistic/loggy)
        state = (shortcut ? state : 0) + in + self
        out  = output_layer(state)              # connected hidden->outputs, activation
    """

    def __init__(self, layer):
        super().__init__(layer)
        sec = layer.section
        self.act = layer.p["activation"]
        log = sec.get_int("logistic", 0)
        self.self_act = "loggy" if log == 2 else ("logistic" if log == 1 else self.act)
        self.shortcut = sec.get_int("shortcut", 0)
        self.hidden = self.input_layer_weights.shape[0]

    def forward(self, x, outs=None):
        n = x.shape[0]
        x = x.reshape(n, -1)
        state = x.new_zeros((n, self.hidden)) if self.training else self._get("state", (n, self.hidden), x)
        a = self._connected("input_layer", x, self.act)
        s = self._connected("self_layer", state, self.self_act)
        new = (state if self.shortcut else 0) + a + s
        y = self._connected("output_layer", new, self.act)
        return self._emit(y, state=None if self.training else new)


@modules.register("gru")
class GRU(_Recurrent):
    """forward_gru_layer (steps=1), all six connected sub-layers LINEAR::

        z = logistic(input_z(x) + state_z(state))
        r = logistic(input_r(x) + state_r(state))
        h = logistic(input_h(x) + state_h(r * state))     # USET is not defined in gru_layer.c
        out = state = z * state + (1 - z) * h              # weighted_sum_cpu(state, h, z)
    """

    def forward(self, x, outs=None):
        n = x.shape[0]
        x = x.reshape(n, -1)
        state = self._get("state", (n, self.outputs), x)
        z = torch.sigmoid(self._gate("input_z", x, "state_z", state))
        r = torch.sigmoid(self._gate("input_r", x, "state_r", state))
        h = torch.sigmoid(self._gate("input_h", x, "state_h", r * state))
        out = z * state + (1 - z) * h
        return self._emit(out, state=out)


@modules.register("lstm")
class LSTM(_Recurrent):
    """forward_lstm_layer (steps=1), all eight connected sub-layers LINEAR; state is (h, c)::

        f = logistic(wf(h) + uf(x));  i = logistic(wi(h) + ui(x))
        g = tanh(wg(h) + ug(x));      o = logistic(wo(h) + uo(x))
        c = f * c + i * g;            out = h = o * tanh(c)
    """

    def forward(self, x, outs=None):
        n = x.shape[0]
        x = x.reshape(n, -1)
        h, c = self._get("h", (n, self.outputs), x), self._get("c", (n, self.outputs), x)
        f = torch.sigmoid(self._gate("wf", h, "uf", x))
        i = torch.sigmoid(self._gate("wi", h, "ui", x))
        g = torch.tanh(self._gate("wg", h, "ug", x))
        o = torch.sigmoid(self._gate("wo", h, "uo", x))
        c = f * c + i * g
        h = o * torch.tanh(c)
        return self._emit(h, h=h, c=c)


@modules.register("crnn")
class CRNN(_Recurrent):
    """forward_crnn_layer (steps=1): as [rnn] with three convolutions (input_layer c->hidden, self_layer
    hidden->hidden, output_layer hidden->output; same size/stride/pad/dilation/groups, the layer's activation and
    BN each). The state is the ``hidden`` x out_h x out_w map; Darknet feeds it to self/output layers as an
    ``h x w`` image and asserts their sizes agree, so only size-preserving geometries run."""

    def __init__(self, layer):
        super().__init__(layer)
        self._setup_conv(layer)
        self.shortcut = layer.section.get_int("shortcut", 0)
        self.hidden = self.input_layer_weights.shape[0]

    def forward(self, x, outs=None):
        c, h, w = self.chw
        oh, ow = self.out_shape[1:]
        self._check_conv()
        n = x.shape[0]
        x = x.reshape(n, c, h, w)
        shape = (n, self.hidden, oh, ow)
        state = x.new_zeros(shape) if self.training else self._get("state", shape, x)
        a = self._conv("input_layer", x)
        s = self._conv("self_layer", state)
        new = (state if self.shortcut else 0) + a + s
        y = self._conv("output_layer", new)
        if not self.training:
            self._put(state=new)
        return y


def _fix_nan_and_inf(t):
    """blas.c fix_nan_and_inf_cpu: a NaN/inf at flat index i of the (batch x outputs) buffer becomes 1.0f/i."""
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return t
    idx = torch.arange(t.numel(), device=t.device, dtype=t.dtype).view(t.shape)
    return torch.where(bad, 1.0 / idx, t)


@modules.register("conv_lstm")
class ConvLSTM(_Recurrent):
    """forward_conv_lstm_layer (CPU, steps=1); every sub-layer is a convolution with the layer's activation (default
    linear) and BN; state is (h, c), each (output x out_h x out_w)::

        f = logistic(wf(h) + uf(x) [+ vf(c)]);  i = logistic(wi(h) + ui(x) [+ vi(c)]);  g = tanh(wg(h) + ug(x))
        c = f * c + i * g
        o = logistic(wo(h) + uo(x) [+ vo(c)])           # peephole vo reads the new c
        out = h = o * tanh(c)
        c = clamp(c, -state_constrain, state_constrain)  # after h; state_constrain=32*time_steps, time_steps=1
        c, h = fix_nan_and_inf(c), fix_nan_and_inf(h)

    The CPU code uses tanh whatever ``lstm_activation`` says, and has no ``bottleneck`` path (its CPU forward
    would read past the state buffer), so ``bottleneck=1`` is refused."""

    def __init__(self, layer):
        super().__init__(layer)
        self._setup_conv(layer)
        sec = layer.section
        self.peephole = sec.get_int("peephole", 0)
        self.bottleneck = sec.get_int("bottleneck", 0)
        self.state_constrain = sec.get_int("state_constrain", 32)

    def forward(self, x, outs=None):
        c_in, h_in, w_in = self.chw
        self._check_conv()
        if self.bottleneck:
            self._fail("bottleneck=1 has no CPU forward in Darknet and is not supported")
        n = x.shape[0]
        x = x.reshape(n, c_in, h_in, w_in)
        shape = (n,) + self.out_shape
        h = self._get("h", shape, x)
        c = self._get("c", shape, x)
        f = self._conv("wf", h) + self._conv("uf", x)
        i = self._conv("wi", h) + self._conv("ui", x)
        if self.peephole:
            f = f + self._conv("vf", c)
            i = i + self._conv("vi", c)
        g = torch.tanh(self._conv("wg", h) + self._conv("ug", x))
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        c = f * c + i * g
        o = self._conv("wo", h) + self._conv("uo", x)
        if self.peephole:
            o = o + self._conv("vo", c)
        o = torch.sigmoid(o)
        h = o * torch.tanh(c)
        if self.state_constrain:              # fminf(A, fmaxf(-A, c)): a NaN becomes -A, as fmaxf drops NaN
            a = float(self.state_constrain)
            c = torch.where(torch.isnan(c), torch.full_like(c, -a), c.clamp(-a, a))
        c = _fix_nan_and_inf(c)
        h = _fix_nan_and_inf(h)
        self._put(h=h, c=c)
        return h
