"""Layer semantics from the Darknet spec, each against a direct (loop / formula) reference."""
import math

import numpy as np
import pytest
import torch

from darknet_prn import Darknet
from darknet_prn.activations import activate


def build(body, w=8, h=8, c=4):
    net = Darknet.from_cfg_text(f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n" + body, path="t.cfg").eval()
    return net


def run(net, x):
    with torch.no_grad():
        return net.layer_outputs(x)


def test_route_groups_slice_each_input():
    net = build("[convolutional]\nfilters=8\nsize=1\nactivation=linear\n[convolutional]\nfilters=6\nsize=1\n"
                "activation=linear\n[route]\nlayers=-2,-1\ngroups=2\ngroup_id=1\n")
    o = run(net, torch.rand(1, 4, 8, 8))
    assert torch.equal(o[2], torch.cat([o[0][:, 4:8], o[1][:, 3:6]], 1))


@pytest.mark.parametrize("c_prev,c_from", [(4, 8), (12, 8), (8, 8)])
def test_shortcut_partial_channels(c_prev, c_from):
    net = build(f"[convolutional]\nfilters={c_from}\nsize=1\nactivation=linear\n"
                f"[convolutional]\nfilters={c_prev}\nsize=1\nactivation=linear\n[shortcut]\nfrom=-2\n")
    o = run(net, torch.rand(1, 4, 8, 8))
    a, b = o[0], o[1]
    m = min(c_prev, c_from)
    exp = b.clone()
    exp[:, :m] += a[:, :m]
    assert torch.equal(o[2], exp) and o[2].shape[1] == c_prev


def test_shortcut_multi_input_and_activation():
    net = build("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[convolutional]\nfilters=4\nsize=1\n"
                "activation=linear\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
                "[shortcut]\nfrom=-2,-3\nactivation=leaky\n")
    o = run(net, torch.rand(1, 4, 8, 8) - 0.5)
    s = o[2] + o[1] + o[0]
    assert torch.allclose(o[3], torch.where(s > 0, s, 0.1 * s))


def test_weighted_shortcut_relu_and_softmax_normalisation():
    net = build("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[convolutional]\nfilters=4\nsize=1\n"
                "activation=linear\n[shortcut]\nfrom=-2\nweights_type=per_channel\nweights_normalization=softmax\n"
                "[shortcut]\nfrom=-3\nweights_type=per_feature\nweights_normalization=relu\n")
    with torch.no_grad():
        net.layers[2].weights.copy_(torch.tensor([[0.5, -1, 2, 0], [1, 1, -3, 0.25]]))
        net.layers[3].weights.copy_(torch.tensor([-0.5, 2.0]))
    o = run(net, torch.rand(1, 4, 8, 8))
    w = net.layers[2].weights.detach().numpy().astype(np.float64)
    e = np.exp(w - w.max(0))
    nw = e / (1e-4 + e.sum(0))
    exp = o[1].numpy() * nw[0][None, :, None, None] + o[0].numpy() * nw[1][None, :, None, None]
    assert np.allclose(o[2].numpy(), exp, atol=1e-6)
    r = np.maximum([-0.5, 2.0], 0)
    r = r / (1e-4 + r.sum())
    assert np.allclose(o[3].numpy(), o[2].numpy() * r[0] + o[0].numpy() * r[1], atol=1e-6)


def ref_maxpool(x, size, stride, padding):
    c, h, w = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    off = -(padding // 2)
    out = np.full((c, oh, ow), -np.inf, np.float32)
    for i in range(oh):
        for j in range(ow):
            for dy in range(size):
                for dx in range(size):
                    y, xx = off + i * stride + dy, off + j * stride + dx
                    if 0 <= y < h and 0 <= xx < w:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, y, xx])
    return out


@pytest.mark.parametrize("hw,size,stride,out", [(13, 2, 2, 7), (13, 2, 1, 13), (31, 3, 2, 16), (32, 3, 2, 16),
                                                (13, 5, 1, 13), (13, 9, 1, 13)])
def test_maxpool_darknet_padding(hw, size, stride, out):
    net = build(f"[maxpool]\nsize={size}\nstride={stride}\n", hw, hw, 3)
    x = torch.rand(1, 3, hw, hw)
    o = run(net, x)[0][0].numpy()
    assert o.shape == (3, out, out)
    assert np.array_equal(o, ref_maxpool(x[0].numpy(), size, stride, size - 1))


def test_maxpool_depth_and_local_avgpool():
    net = build("[maxpool]\nmaxpool_depth=1\nout_channels=2\nsize=1\nstride=1\n", 6, 6, 5)
    x = torch.rand(1, 5, 6, 6)
    o = run(net, x)[0]
    assert torch.equal(o[:, 0], torch.max(torch.max(x[:, 0], x[:, 2]), x[:, 4]))
    assert torch.equal(o[:, 1], torch.max(x[:, 1], x[:, 3]))
    net = build("[local_avgpool]\nsize=3\nstride=2\n", 7, 7, 2)
    x = torch.rand(1, 2, 7, 7)
    o = run(net, x)[0][0].numpy()
    xn = x[0].numpy()
    assert o.shape == (2, 4, 4)
    for i in range(4):
        for j in range(4):
            win = xn[:, max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2]
            assert np.allclose(o[:, i, j], win.mean(axis=(1, 2)), atol=1e-6)


def test_upsample_positive_and_negative_stride():
    net = build("[upsample]\nstride=2\nscale=0.5\n[upsample]\nstride=-2\n", 4, 4, 2)
    x = torch.rand(1, 2, 4, 4)
    o = run(net, x)
    assert torch.equal(o[0], 0.5 * x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.allclose(o[1], o[0].reshape(1, 2, 4, 2, 4, 2).sum((3, 5)))


def test_reorg3d_and_old_reorg_formulas():
    s = 2
    x = torch.rand(1, 8, 4, 4)
    o = run(build("[reorg3d]\nstride=2\n", 4, 4, 8), x) + [None] + run(build("[reorg]\nstride=2\n", 4, 4, 8), x)
    xn = x[0].numpy()
    c, h, w = xn.shape
    r3 = np.zeros((c * 4, 2, 2), np.float32)
    for off in range(s * s):
        for c0 in range(c):
            for j in range(2):
                for i in range(2):
                    r3[off * c + c0, j, i] = xn[c0, j * s + off // s, i * s + off % s]
    assert np.array_equal(o[0][0].numpy(), r3)
    # pjreddie's reorg_cpu(in, w, h, c, stride, forward=0) on the input dims
    flat = xn.reshape(-1)
    out = np.zeros(c * h * w, np.float32)
    oc = c // (s * s)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                c2, offset = k % oc, k // oc
                w2, h2 = i * s + offset % s, j * s + offset // s
                out[i + w * (j + h * k)] = flat[w2 + w * s * (h2 + h * s * c2)]
    assert o[2].shape == (1, 32, 2, 2) and np.array_equal(o[2][0].numpy().reshape(-1), out)


def test_crop_is_2x_minus_1_and_lrn_off_by_one():
    net = build("[crop]\ncrop_height=4\ncrop_width=4\n[lrn]\nsize=5\nalpha=0.1\nbeta=0.75\nkappa=2\n", 8, 8, 7)
    x = torch.rand(1, 7, 8, 8)
    o = run(net, x)
    y = x[:, :, 2:6, 2:6] * 2 - 1
    assert torch.allclose(o[0], y)
    sq = (y[0] ** 2).numpy()
    norms = np.zeros_like(sq)
    norms[0] = 2 + 0.1 * sq[:2].sum(0)
    for k in range(1, 7):
        norms[k] = norms[k - 1]
        prev, nxt = k - 2 - 1, k + 2
        if prev >= 0:
            norms[k] -= 0.1 * sq[prev]
        if nxt < 7:
            norms[k] += 0.1 * sq[nxt]
    assert np.allclose(o[1][0].numpy(), y[0].numpy() * norms ** -0.75, atol=1e-5)


def test_yolo_new_coords_and_scale_xy():
    body = ("[convolutional]\nfilters=14\nsize=1\nactivation=linear\n[yolo]\nclasses=2\nmask=0,1\nnum=2\n"
            "anchors=1,2,3,4\nscale_x_y=1.2\nnew_coords={}\n")
    x = torch.rand(1, 3, 4, 4)
    for nc in (0, 1):
        net = build(body.format(nc), 4, 4, 3)
        o = run(net, x)
        v = o[0].view(2, 7, 4, 4)
        y = o[1].view(2, 7, 4, 4)
        f = (lambda t: torch.sigmoid(t)) if nc == 0 else (lambda t: t)
        assert torch.allclose(y[:, :2], f(v[:, :2]) * 1.2 - 0.1, atol=1e-6)
        assert torch.equal(y[:, 2:4], v[:, 2:4])
        assert torch.allclose(y[:, 4:], f(v[:, 4:]))


def test_region_layout_and_tree_softmax(tmp_path):
    (tmp_path / "t.tree").write_text("a -1\nb -1\nc 0\nd 0\ne 0\n")
    cfg = ("[net]\nwidth=3\nheight=3\nchannels=2\n[convolutional]\nfilters=20\nsize=1\nactivation=linear\n"
           "[region]\nclasses=5\ncoords=4\nnum=2\nsoftmax=1\ntree=t.tree\nanchors=1,1,2,2\n")
    p = tmp_path / "r.cfg"
    p.write_text(cfg)
    net = Darknet.from_cfg(p).eval()
    x = torch.rand(1, 2, 3, 3)
    o = run(net, x)
    v = o[0][0].reshape(20, 9).T.reshape(9, 2, 10)        # [cell][anchor][entries]
    r = o[1][0]
    assert r.shape == (9, 2, 10)
    assert torch.equal(r[..., :4], v[..., :4])
    assert torch.allclose(r[..., 4], torch.sigmoid(v[..., 4]))
    assert torch.allclose(r[..., 5:7], torch.softmax(v[..., 5:7], -1))
    assert torch.allclose(r[..., 7:10], torch.softmax(v[..., 7:10], -1))


def test_strided_shortcut_pjreddie():
    net = build("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[convolutional]\nfilters=6\nsize=1\n"
                "stride=2\nactivation=linear\n[shortcut]\nfrom=-2\n", 8, 8, 3)
    o = run(net, torch.rand(1, 3, 8, 8))
    exp = o[1].clone()
    exp[:, :4] += o[0][:, :, ::2, ::2]
    assert torch.equal(o[2], exp)


XS = torch.linspace(-30, 30, 6001, dtype=torch.float32)


def _ref(name, x):
    x = float(x)
    sp = x if x > 20 else (math.exp(x) if x < -20 else math.log(math.exp(x) + 1))
    lg = 1 / (1 + math.exp(-x))
    table = {
        "leaky": x if x > 0 else 0.1 * x, "logistic": lg, "mish": x * math.tanh(sp), "swish": x * lg,
        "hard_mish": x if x > 0 else (x * x / 2 + x if x > -2 else 0.0), "relu6": min(max(x, 0), 6),
        "elu": x if x >= 0 else math.exp(x) - 1, "selu": 1.0507 * x if x >= 0 else 1.0507 * 1.6732 * (math.exp(x) - 1),
        "gelu": 0.5 * x * (1 + math.tanh(0.797885 * x + 0.035677 * x ** 3)), "relie": x if x > 0 else 0.01 * x,
        "ramp": x * (x > 0) + 0.1 * x, "tanh": math.tanh(x), "loggy": 2 * lg - 1,
        "plse": 0.01 * (x + 4) if x < -4 else (0.01 * (x - 4) + 1 if x > 4 else 0.125 * x + 0.5),
        "hardtan": max(-1, min(1, x)), "lhtan": 0.001 * x if x < 0 else (0.001 * (x - 1) + 1 if x > 1 else x),
        "stair": (math.floor(x / 2) if math.floor(x) % 2 == 0 else (x - math.floor(x)) + math.floor(x / 2)),
    }
    return table[name]


@pytest.mark.parametrize("name", ["leaky", "logistic", "mish", "swish", "hard_mish", "relu6", "elu", "selu", "gelu",
                                  "relie", "ramp", "tanh", "loggy", "plse", "hardtan", "lhtan", "stair"])
def test_activation_formulas(name):
    got = activate(XS.view(1, -1, 1, 1), name).view(-1).double()
    ref = torch.tensor([_ref(name, v) for v in XS.tolist()], dtype=torch.float64)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_normalize_channels_activations():
    x = torch.randn(2, 5, 3, 3)
    pos = x.clamp(min=0)
    assert torch.allclose(activate(x, "normalize_channels"), pos / (1e-4 + pos.sum(1, keepdim=True)))
    e = torch.exp(x)
    assert torch.allclose(activate(x, "normalize_channels_softmax"), e / (1e-4 + e.sum(1, keepdim=True)), atol=1e-6)
    em = torch.exp(x - x.max(1, keepdim=True).values)
    assert torch.allclose(activate(x, "normalize_channels_softmax_maxval"), em / (1e-4 + em.sum(1, keepdim=True)),
                          atol=1e-6)


def test_conv_geometry_matches_darknet_formula():
    # size 4 (even), stride 3, dilation 2 with pad: Darknet's output size ignores dilation
    net = build("[convolutional]\nfilters=2\nsize=4\nstride=3\npad=1\nactivation=linear\n"
                "[convolutional]\nfilters=2\nsize=3\ndilation=2\npad=1\nactivation=linear\n", 11, 11, 2)
    assert net.graph.layers[0].out_shape == (2, (11 + 4 - 4) // 3 + 1, 4)
    x = torch.rand(1, 2, 11, 11)
    o = run(net, x)
    # reference: im2col with pad*dilation zero padding
    w = net.layers[0].weights.detach()
    xp = torch.nn.functional.pad(x, (2, 4, 2, 4))
    ref = torch.nn.functional.conv2d(xp, w, stride=3)[:, :, :4, :4] + net.layers[0].biases.view(1, -1, 1, 1)
    assert torch.allclose(o[0], ref, atol=1e-6)
    assert o[1].shape == (1, 2, 4, 4)


def test_partial_shortcut_equals_shortcut_and_sparsity():
    head = "[convolutional]\nfilters=8\nsize=1\nactivation=linear\n[convolutional]\nfilters=8\nsize=1\nactivation=linear\n"
    a = build(head + "[shortcut]\nfrom=-2\nactivation=leaky\n")
    b = build(head + "[partial_shortcut]\nfrom=-2\nactivation=leaky\n")
    c = build(head + "[partial_shortcut]\nfrom=-2\nsparsity=0.5\n")
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    x = torch.rand(1, 4, 8, 8)
    oa, ob, oc = run(a, x), run(b, x), run(c, x)
    assert torch.equal(oa[2], ob[2])
    exp = oc[1].clone()
    exp[:, :4] += oc[0][:, :4]
    assert torch.equal(oc[2], exp)


def test_wrong_input_size_is_a_clear_error():
    from darknet_prn.errors import DarknetError
    net = build("[convolutional]\nfilters=2\nsize=1\n", 8, 8, 3)
    for backend in ("torch", "exact"):
        net.set_backend(backend)
        with pytest.raises(DarknetError, match=r"^input is \(3, 16, 16\) but the cfg expects \(3, 8, 8\) \(C, H, W\); "
                                               r"use from_cfg\(\.\.\., width=, height=\) for another size$"):
            net(torch.rand(1, 3, 16, 16))
        with pytest.raises(DarknetError, match=r"^input must be \(N, C, H, W\), got shape \(3, 8, 8\)$"):
            net(torch.rand(3, 8, 8))
