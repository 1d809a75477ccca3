"""[rnn] [crnn] [gru] [lstm] [conv_lstm] forward passes against literal float64 numpy transcriptions of AlexeyAB
darknet's CPU loops (rnn_layer.c, crnn_layer.c, gru_layer.c, lstm_layer.c, conv_lstm_layer.c, connected_layer.c,
convolutional_layer.c, blas.c), over successive calls that carry the state (one call = one time step, as
``network_predict`` on a sequence)."""
import warnings

import numpy as np
import pytest
import torch

from darknet_prn import Darknet
from darknet_prn.errors import CfgError

from conftest import CORPUS  # noqa: E402
STEPS = 3


# ---------------------------------------------------------------------------------------------------------------
# numpy transcription of the C code (float64, flat arrays, batch-major as Darknet stores them)
def fill_cpu(n, a, x):
    x[:n] = a


def copy_cpu(n, x, y):
    y[:n] = x[:n]


def axpy_cpu(n, a, x, y):
    y[:n] += a * x[:n]


def mul_cpu(n, x, y):
    y[:n] *= x[:n]


def weighted_sum_cpu(a, b, s, n, c):
    for i in range(n):
        c[i] = s[i] * a[i] + (1 - s[i]) * (b[i] if b is not None else 0)


def activate_array(x, n, act):
    for i in range(n):
        v = x[i]
        if act == "logistic":
            x[i] = 1.0 / (1.0 + np.exp(-v))
        elif act == "loggy":
            x[i] = 2.0 / (1.0 + np.exp(-v)) - 1
        elif act == "tanh":
            x[i] = (np.exp(2 * v) - 1) / (np.exp(2 * v) + 1)
        elif act == "leaky":
            x[i] = v if v > 0 else 0.1 * v
        elif act == "linear":
            pass
        else:
            raise ValueError(act)


def batchnorm_cpu(out, batch, n, spatial, L):
    # forward_batchnorm_layer (inference): normalize_cpu, scale_bias
    for b in range(batch):
        for f in range(n):
            for i in range(spatial):
                k = (b * n + f) * spatial + i
                out[k] = (out[k] - L["rolling_mean"][f]) / np.sqrt(L["rolling_variance"][f] + .00001)
                out[k] *= L["scales"][f]


def add_bias(out, biases, batch, n, spatial):
    for b in range(batch):
        for f in range(n):
            for i in range(spatial):
                out[(b * n + f) * spatial + i] += biases[f]


def forward_connected_layer(L, inp, batch, act, bn):
    """connected_layer.c: gemm(0,1,...) out = in . W^T; BN (before bias); add_bias; activate."""
    W = L["weights"]                        # [outputs][inputs]
    outputs, inputs = W.shape
    out = np.zeros(batch * outputs)
    for b in range(batch):
        for o in range(outputs):
            s = 0.0
            for i in range(inputs):
                s += inp[b * inputs + i] * W[o, i]
            out[b * outputs + o] = s
    if bn:
        batchnorm_cpu(out, batch, outputs, 1, L)
    add_bias(out, L["biases"], batch, outputs, 1)
    activate_array(out, batch * outputs, act)
    return out


def forward_convolutional_layer(L, inp, batch, c, h, w, size, stride, pad, dilation, groups, act, bn):
    """convolutional_layer.c: im2col_cpu_ext (pad*dilation, dilation) + gemm per group; BN or bias; activate."""
    W = L["weights"]                        # [n][c/groups][size][size]
    n = W.shape[0]
    oh = (h + 2 * pad - size) // stride + 1
    ow = (w + 2 * pad - size) // stride + 1
    P = pad * dilation
    out = np.zeros(batch * n * oh * ow)
    cg, ng = c // groups, n // groups
    for b in range(batch):
        for f in range(n):
            g = f // ng
            for y in range(oh):
                for x in range(ow):
                    s = 0.0
                    for ci in range(cg):
                        ch = g * cg + ci
                        for ky in range(size):
                            for kx in range(size):
                                row = y * stride - P + ky * dilation
                                col = x * stride - P + kx * dilation
                                if 0 <= row < h and 0 <= col < w:
                                    s += W[f, ci, ky, kx] * inp[((b * c + ch) * h + row) * w + col]
                    out[((b * n + f) * oh + y) * ow + x] = s
    if bn:
        batchnorm_cpu(out, batch, n, oh * ow, L)
    add_bias(out, L["biases"], batch, n, oh * ow)
    activate_array(out, batch * n * oh * ow, act)
    return out


class RefRNN:
    """forward_rnn_layer with steps=1, state.train=0 (l.state is not advanced; it persists between calls)."""

    def __init__(self, W, batch, hidden, act, self_act, shortcut, bn):
        self.W, self.batch, self.hidden = W, batch, hidden
        self.act, self.self_act, self.shortcut, self.bn = act, self_act, shortcut, bn
        self.state = np.zeros(batch * hidden)                       # calloc

    def forward(self, inp):
        l, n = self, self.hidden * self.batch
        input_out = forward_connected_layer(self.W["input_layer"], inp, l.batch, l.act, l.bn)
        self_out = forward_connected_layer(self.W["self_layer"], l.state, l.batch, l.self_act, l.bn)
        old_state = l.state.copy()                                  # same buffer (train=0)
        if l.shortcut:
            copy_cpu(n, old_state, l.state)
        else:
            fill_cpu(n, 0, l.state)
        axpy_cpu(n, 1, input_out, l.state)
        axpy_cpu(n, 1, self_out, l.state)
        return forward_connected_layer(self.W["output_layer"], l.state, l.batch, l.act, l.bn)


class RefCRNN:
    def __init__(self, W, batch, c, h, w, hidden, geo, act, shortcut, bn):
        self.W, self.batch, self.c, self.h, self.w, self.hid = W, batch, c, h, w, hidden
        self.geo, self.act, self.shortcut, self.bn = geo, act, shortcut, bn
        self.state = np.zeros(batch * hidden * h * w)

    def forward(self, inp):
        l, n = self, self.hid * self.h * self.w * self.batch
        conv = lambda name, x, cin: forward_convolutional_layer(   # noqa: E731
            self.W[name], x, l.batch, cin, l.h, l.w, *l.geo, l.act, l.bn)
        input_out = conv("input_layer", inp, l.c)
        self_out = conv("self_layer", l.state, l.hid)
        old_state = l.state.copy()
        if l.shortcut:
            copy_cpu(n, old_state, l.state)
        else:
            fill_cpu(n, 0, l.state)
        axpy_cpu(n, 1, input_out, l.state)
        axpy_cpu(n, 1, self_out, l.state)
        return conv("output_layer", l.state, l.hid)


class RefGRU:
    def __init__(self, W, batch, outputs, bn):
        self.W, self.batch, self.outputs, self.bn = W, batch, outputs, bn
        self.state = np.zeros(batch * outputs)

    def forward(self, inp):
        l, n = self, self.outputs * self.batch
        fc = lambda name, x: forward_connected_layer(self.W[name], x, l.batch, "linear", l.bn)  # noqa: E731
        state_z = fc("state_z", l.state)
        state_r = fc("state_r", l.state)
        input_z = fc("input_z", inp)
        input_r = fc("input_r", inp)
        input_h = fc("input_h", inp)
        z = np.zeros(n)
        r = np.zeros(n)
        h = np.zeros(n)
        copy_cpu(n, input_z, z)
        axpy_cpu(n, 1, state_z, z)
        copy_cpu(n, input_r, r)
        axpy_cpu(n, 1, state_r, r)
        activate_array(z, n, "logistic")
        activate_array(r, n, "logistic")
        forgot_state = np.zeros(n)
        copy_cpu(n, l.state, forgot_state)
        mul_cpu(n, r, forgot_state)
        state_h = fc("state_h", forgot_state)
        copy_cpu(n, input_h, h)
        axpy_cpu(n, 1, state_h, h)
        activate_array(h, n, "logistic")                            # USET undefined in gru_layer.c
        output = np.zeros(n)
        weighted_sum_cpu(l.state, h, z, n, output)
        copy_cpu(n, output, l.state)
        return output


class RefLSTM:
    def __init__(self, W, batch, outputs, bn):
        self.W, self.batch, self.outputs, self.bn = W, batch, outputs, bn
        self.h_cpu = np.zeros(batch * outputs)
        self.c_cpu = np.zeros(batch * outputs)

    def forward(self, inp):
        l, n = self, self.outputs * self.batch
        fc = lambda name, x: forward_connected_layer(self.W[name], x, l.batch, "linear", l.bn)  # noqa: E731
        wf, wi, wg, wo = (fc(k, l.h_cpu) for k in ("wf", "wi", "wg", "wo"))
        uf, ui, ug, uo = (fc(k, inp) for k in ("uf", "ui", "ug", "uo"))
        f, i, g, o = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        for dst, a, b in ((f, wf, uf), (i, wi, ui), (g, wg, ug), (o, wo, uo)):
            copy_cpu(n, a, dst)
            axpy_cpu(n, 1, b, dst)
        activate_array(f, n, "logistic")
        activate_array(i, n, "logistic")
        activate_array(g, n, "tanh")
        activate_array(o, n, "logistic")
        temp = np.zeros(n)
        copy_cpu(n, i, temp)
        mul_cpu(n, g, temp)
        mul_cpu(n, f, l.c_cpu)
        axpy_cpu(n, 1, temp, l.c_cpu)
        copy_cpu(n, l.c_cpu, l.h_cpu)
        activate_array(l.h_cpu, n, "tanh")
        mul_cpu(n, o, l.h_cpu)
        return l.h_cpu.copy()


class RefConvLSTM:
    """forward_conv_lstm_layer (CPU) with steps=1; h_cpu/c_cpu persist (calloc'd)."""

    def __init__(self, W, batch, c, h, w, outputs, geo, act, peephole, constrain, bn):
        self.W, self.batch, self.c, self.h, self.w, self.out = W, batch, c, h, w, outputs
        self.geo, self.act, self.peephole, self.constrain, self.bn = geo, act, peephole, constrain, bn
        self.h_cpu = np.zeros(batch * outputs * h * w)
        self.c_cpu = np.zeros(batch * outputs * h * w)

    def forward(self, inp):
        l = self
        n = l.out * l.h * l.w * l.batch
        conv = lambda name, x, cin: forward_convolutional_layer(   # noqa: E731
            self.W[name], x, l.batch, cin, l.h, l.w, *l.geo, l.act, l.bn)
        if l.peephole:
            vf = conv("vf", l.c_cpu, l.out)
            vi = conv("vi", l.c_cpu, l.out)
        wf, wi, wg, wo = (conv(k, l.h_cpu, l.out) for k in ("wf", "wi", "wg", "wo"))
        uf, ui, ug, uo = (conv(k, inp, l.c) for k in ("uf", "ui", "ug", "uo"))
        f, i, g, o, temp = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        copy_cpu(n, wf, f)
        axpy_cpu(n, 1, uf, f)
        if l.peephole:
            axpy_cpu(n, 1, vf, f)
        copy_cpu(n, wi, i)
        axpy_cpu(n, 1, ui, i)
        if l.peephole:
            axpy_cpu(n, 1, vi, i)
        copy_cpu(n, wg, g)
        axpy_cpu(n, 1, ug, g)
        activate_array(f, n, "logistic")
        activate_array(i, n, "logistic")
        activate_array(g, n, "tanh")
        copy_cpu(n, i, temp)
        mul_cpu(n, g, temp)
        mul_cpu(n, f, l.c_cpu)
        axpy_cpu(n, 1, temp, l.c_cpu)
        if l.peephole:
            vo = conv("vo", l.c_cpu, l.out)
        copy_cpu(n, wo, o)
        axpy_cpu(n, 1, uo, o)
        if l.peephole:
            axpy_cpu(n, 1, vo, o)
        activate_array(o, n, "logistic")
        copy_cpu(n, l.c_cpu, l.h_cpu)
        activate_array(l.h_cpu, n, "tanh")
        mul_cpu(n, o, l.h_cpu)
        if l.constrain:
            for k in range(n):                                      # constrain_cpu
                l.c_cpu[k] = min(l.constrain, max(-l.constrain, l.c_cpu[k]))
        return l.h_cpu.copy()


# ---------------------------------------------------------------------------------------------------------------
def make_net(body, net_hdr):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Darknet.from_cfg_text(net_hdr + body, path="t.cfg")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith("rolling_variance"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif name.endswith("scales"):
                t.copy_(torch.rand_like(t) + 0.5)
            else:
                t.copy_(torch.randn_like(t) * 0.5)
    return net.double().eval()


def sub_weights(module, prefixes):
    out = {}
    for p in prefixes:
        d = {}
        for k in ("weights", "biases", "scales", "rolling_mean", "rolling_variance"):
            t = getattr(module, f"{p}_{k}", None)
            if t is not None:
                d[k] = t.detach().double().numpy().copy()
        out[p] = d
    return out


def run_seq(net, ref, xs):
    for x in xs:
        with torch.no_grad():
            y = net(torch.from_numpy(x))[0]
        exp = ref.forward(x.reshape(-1).copy())
        np.testing.assert_allclose(y.numpy().reshape(-1), exp, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bn", [0, 1])
@pytest.mark.parametrize("shortcut,logistic,act", [(0, 0, "leaky"), (1, 0, "leaky"), (0, 1, "tanh"),
                                                    (1, 2, "linear")])
def test_rnn_matches_c_loops(bn, shortcut, logistic, act):
    net = make_net(f"[rnn]\nbatch_normalize={bn}\noutput=3\nhidden=4\nactivation={act}\nshortcut={shortcut}\n"
                   f"logistic={logistic}\n", "[net]\ninputs=5\n")
    self_act = {0: act, 1: "logistic", 2: "loggy"}[logistic]
    ref = RefRNN(sub_weights(net.layers[0], ["input_layer", "self_layer", "output_layer"]), 2, 4, act, self_act,
                 shortcut, bn)
    rng = np.random.default_rng(1)
    run_seq(net, ref, [rng.standard_normal((2, 5, 1, 1)) for _ in range(STEPS)])


@pytest.mark.parametrize("bn", [0, 1])
def test_gru_matches_c_loops(bn):
    net = make_net(f"[gru]\nbatch_normalize={bn}\noutput=4\n", "[net]\ninputs=5\n")
    names = ["input_z", "input_r", "input_h", "state_z", "state_r", "state_h"]
    ref = RefGRU(sub_weights(net.layers[0], names), 2, 4, bn)
    rng = np.random.default_rng(2)
    run_seq(net, ref, [rng.standard_normal((2, 5, 1, 1)) for _ in range(STEPS)])


@pytest.mark.parametrize("bn", [0, 1])
def test_lstm_matches_c_loops(bn):
    net = make_net(f"[lstm]\nbatch_normalize={bn}\noutput=4\n", "[net]\ninputs=5\n")
    names = ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"]
    ref = RefLSTM(sub_weights(net.layers[0], names), 2, 4, bn)
    rng = np.random.default_rng(3)
    run_seq(net, ref, [rng.standard_normal((2, 5, 1, 1)) for _ in range(STEPS)])


@pytest.mark.parametrize("bn,shortcut,size,pad,dilation,groups", [
    (1, 0, 3, 1, 1, 1), (0, 1, 3, 1, 1, 1), (1, 0, 1, 0, 1, 1), (0, 0, 3, 1, 2, 1), (1, 1, 3, 1, 1, 2)])
def test_crnn_matches_c_loops(bn, shortcut, size, pad, dilation, groups):
    c, h, w, hidden, out = 4, 4, 5, 4, 2
    net = make_net(f"[crnn]\nbatch_normalize={bn}\nsize={size}\npad={pad}\ndilation={dilation}\ngroups={groups}\n"
                   f"output={out}\nhidden={hidden}\nactivation=leaky\nshortcut={shortcut}\n",
                   f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n")
    padding = size // 2 if pad else 0
    ref = RefCRNN(sub_weights(net.layers[0], ["input_layer", "self_layer", "output_layer"]), 2, c, h, w, hidden,
                  (size, 1, padding, dilation, groups), "leaky", shortcut, bn)
    rng = np.random.default_rng(4)
    run_seq(net, ref, [rng.standard_normal((2, c, h, w)) for _ in range(STEPS)])


@pytest.mark.parametrize("bn,peephole,constrain,act", [(1, 0, None, "linear"), (0, 1, None, "leaky"),
                                                       (1, 1, 1, "linear")])
def test_conv_lstm_matches_c_loops(bn, peephole, constrain, act):
    c, h, w, out = 3, 4, 5, 2
    extra = f"state_constrain={constrain}\n" if constrain is not None else ""
    net = make_net(f"[conv_lstm]\nbatch_normalize={bn}\nsize=3\npad=1\noutput={out}\npeephole={peephole}\n"
                   f"activation={act}\n{extra}", f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n")
    names = (["vf", "vi", "vo"] if peephole else []) + ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"]
    ref = RefConvLSTM(sub_weights(net.layers[0], names), 2, c, h, w, out, (3, 1, 1, 1, 1), act, peephole,
                      32 if constrain is None else constrain, bn)
    rng = np.random.default_rng(5)
    run_seq(net, ref, [rng.standard_normal((2, c, h, w)) * 3 for _ in range(STEPS)])


def test_conv_lstm_bottleneck_refused():
    net = make_net("[conv_lstm]\nsize=3\npad=1\noutput=2\nbottleneck=1\n", "[net]\nwidth=4\nheight=4\nchannels=2\n")
    with pytest.raises(CfgError):
        net(torch.randn(1, 2, 4, 4, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------
def _seq(net, xs):
    with torch.no_grad():
        return [net(x)[0].clone() for x in xs]


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_state_reset_and_batch_change(kind):
    extra = "hidden=4\nactivation=leaky\n" if kind == "rnn" else ""
    net = make_net(f"[{kind}]\noutput=3\n{extra}", "[net]\ninputs=5\n")
    xs = [torch.randn(2, 5, 1, 1, dtype=torch.float64) for _ in range(3)]
    a = _seq(net, xs)
    assert not torch.allclose(a[0], a[1]) or not torch.equal(xs[0], xs[1])
    net.layers[0].reset_state()
    b = _seq(net, xs)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    # same input twice: the second call sees the carried state
    net.layers[0].reset_state()
    s1, s2 = _seq(net, [xs[0], xs[0]])
    assert not torch.allclose(s1, s2)
    # a batch-size change starts from zeros again: first output equals a fresh run's first output
    one = _seq(net, [xs[0][:1]])[0]
    assert torch.allclose(one, a[0][:1])
    # the exact (module) path and the default path agree step by step
    net.layers[0].reset_state()
    net.set_backend("exact")
    c = _seq(net, xs)
    net.set_backend("torch")
    for u, v in zip(a, c):
        assert torch.equal(u, v)


def test_state_is_not_in_state_dict():
    net = make_net("[lstm]\noutput=3\n", "[net]\ninputs=5\n")
    keys = set(net.state_dict())
    _seq(net, [torch.randn(1, 5, 1, 1, dtype=torch.float64)])
    assert set(net.state_dict()) == keys


def test_rnn_training_mode_starts_from_zero_state():
    net = make_net("[rnn]\noutput=3\nhidden=4\nactivation=leaky\n", "[net]\ninputs=5\n").train()
    x = torch.randn(1, 5, 1, 1, dtype=torch.float64)
    y1 = net(x)[0]
    y2 = net(x)[0]
    assert torch.equal(y1, y2)
    y1.sum().backward()


def test_crnn_non_preserving_geometry_raises():
    net = make_net("[crnn]\nsize=3\npad=0\noutput=2\nhidden=2\n", "[net]\nwidth=5\nheight=5\nchannels=2\n")
    with pytest.raises(CfgError):
        net(torch.randn(1, 2, 5, 5, dtype=torch.float64))


@pytest.mark.parametrize("cfg,kw", [("rnn.cfg", {}), ("gru.cfg", {}), ("lstm.train.cfg", {}), ("crnn.train.cfg", {}),
                                    ("yolov3-tiny_occlusion_track.cfg", dict(width=128, height=128))])
def test_corpus_cfgs_run(cfg, kw):
    path = CORPUS / cfg
    if not path.exists():
        pytest.skip(f"{path} missing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Darknet.from_cfg(path, **kw).eval()
    x = torch.rand((1,) + tuple(net.graph.input_shape))
    with torch.no_grad():
        o1 = net(x)
        o2 = net(x)
    for a, b in zip(o1, o2):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert any(not torch.equal(a, b) for a, b in zip(o1, o2))        # the state carried over


def test_fast_path_batch_is_not_split_into_time_steps():
    # the eval fast path runs big batches in chunks; with recurrent state that would turn batch items into steps
    net = Darknet.from_cfg(CORPUS / "yolov3-tiny_occlusion_track.cfg", width=416, height=416).eval()
    x = torch.rand(2, 3, 416, 416)
    with torch.no_grad():
        fast = net(x)
        net.reset_state()
        exact = net.set_backend("exact")(x)
    for f, e in zip(fast, exact):
        assert float((f - e).abs().max()) < 1e-3
