"""The inference fast path (darknet_prn.fast): Darknet's numerics through ``net.eval(); net(x)``."""
import copy
import io
import pickle

import numpy as np
import pytest
import torch

import oracle_case
from conftest import materialize, oracle_cases
from darknet_prn import Darknet
from darknet_prn.fast import FastPlan

CASES = oracle_cases()


def _load(case):
    w, inp = materialize(case)
    net = Darknet.from_cfg(case / "model.cfg").eval()
    net.load_weights(w)
    return net, torch.from_numpy(np.load(inp))[None]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_fast_path_matches_darknet(case):
    net, x = _load(case)
    heads = net(x)                                     # eval mode, grad enabled: the fast plan
    assert isinstance(net._fast_plan, FastPlan)
    assert all(not h.requires_grad for h in heads)
    res = oracle_case.compare(str(case), {i: h[0] for i, h in zip(net.output_layers, heads)}, heads_only=True)
    assert res["passed"], (res["first_bad"], res["worst"])
    # and the exact per-module path agrees with it within the same tolerance
    with torch.no_grad():
        outs = net.layer_outputs(x)
    for i, h in zip(net.output_layers, heads):
        e = outs[i]
        assert h.shape == e.shape and h.is_contiguous()
        scale = max(float(e.std()), 1e-6)
        assert float((h - e).abs().max()) / scale < oracle_case.DEFAULT_TOL


# -- small cfgs: every geometry the plan special-cases, against the exact modules ----------------------------
NET = "[net]\nwidth={w}\nheight={h}\nchannels=3\n"


def conv(filters, size=3, stride=1, pad=1, act="leaky", bn=1, extra=""):
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\npad={pad}\n"
            f"activation={act}\n{extra}")


def pool(size, stride, extra=""):
    return f"[maxpool]\nsize={size}\nstride={stride}\n{extra}"


GEOMETRIES = {
    "pools": (NET.format(w=29, h=23) + conv(8) + pool(2, 2) + conv(8) + pool(2, 1) + pool(3, 2) + pool(5, 1)
              + pool(3, 1, "padding=0\n") + pool(2, 2, "stride_x=1\n") + conv(4, act="logistic")),
    # stride-1 pools by doubling windows (SPP): odd and even sizes, Darknet's default and explicit paddings
    "spp-pools": (NET.format(w=19, h=13) + conv(8) + pool(5, 1) + "[route]\nlayers=-2\n" + pool(9, 1)
                  + "[route]\nlayers=-4\n" + pool(13, 1) + "[route]\nlayers=-1,-3,-5,-6\n" + pool(4, 1)
                  + pool(6, 1, "padding=2\n") + pool(7, 1, "padding=0\n") + pool(8, 1, "padding=12\n")
                  + conv(4, act="logistic")),
    "strided-convs": (NET.format(w=33, h=20) + conv(8, 3, 2) + conv(8, 1, 1, 0, "relu") + conv(6, 3, 2, 0, "mish")
                      + conv(8, 5, 1, 1, "swish", 0) + conv(8, 3, 1, 1, "linear", 1, "dilation=2\n")
                      + conv(8, 3, 1, 1, "relu6", 1, "groups=4\n") + conv(8, 3, 1, 1, "leaky", 1, "groups=8\n")
                      + conv(8, 4, 3, 0, "tanh") + conv(8, 3, 1, 1, "hardtan")),
    # a 1x1 head conv over >= 40x40 cells: one GEMM into NCHW, the [yolo] in place on it (new_coords: none)
    "yolo-head-gemm": (NET.format(w=48, h=40) + conv(16) + conv(255, 1, 1, 0, "logistic", 0)
                       + "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=80\nnum=3\nscale_x_y=2.0\n"
                       + "new_coords=1\n" + "[route]\nlayers=-3\n" + conv(255, 1, 1, 0, "linear", 0)
                       + "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=80\nnum=3\n"),
    "routes-shortcuts": (NET.format(w=24, h=24) + conv(16) + conv(8, 1) + conv(16)
                         + "[shortcut]\nfrom=-3\nactivation=leaky\n"
                         + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n" + conv(8, 1)
                         + "[shortcut]\nfrom=0\nactivation=linear\n"           # 16-channel ref onto 8 channels
                         + conv(32, 1) + "[shortcut]\nfrom=-2\nactivation=swish\n"  # 8-channel ref onto 32
                         + "[route]\nlayers=-1,0\n" + pool(2, 2) + "[upsample]\nstride=2\n"
                         + "[route]\nlayers=-1,-3\n" + conv(255, 1, 1, 0, "linear", 0)
                         + "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=80\nnum=3\nscale_x_y=1.05\n"),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("batch", [1, 3])
def test_geometries_match_exact(name, batch):
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(GEOMETRIES[name], warn=False).eval()
    with torch.no_grad():
        for m in net.layers:                           # non-trivial BN statistics
            if hasattr(m, "rolling_mean"):
                m.rolling_mean.uniform_(-0.2, 0.2)
                m.rolling_variance.uniform_(0.5, 1.5)
                m.scales.uniform_(0.5, 1.5)
                m.biases.uniform_(-0.2, 0.2)
    x = torch.rand((batch,) + tuple(net.graph.input_shape))
    with torch.no_grad():
        ref = net._run(x, keep_all=True)
    plan = net.fast_plan()
    outs = {}
    y = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for st in plan.steps:
            y = st.fn(y, outs)
            outs[st.index] = y
            e = ref[st.index]
            assert y.shape == e.shape, (st, y.shape, e.shape)
            err = float((y - e).abs().max()) / max(float(e.std()), 1e-6)
            assert err < 1e-4, (st, err)
    for h, i in zip(net(x), net.output_layers):
        assert torch.allclose(h, ref[i], rtol=1e-4, atol=1e-5)


# -- API semantics --------------------------------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    case = next(c for c in CASES if c.name == "yolov3-tiny-prn")
    net, x = _load(case)
    return case, net, x


def test_plan_rebuilt_after_load_weights(tiny, tmp_path):
    case, net, x = tiny
    h1 = net(x)
    plan = net._fast_plan
    other = Darknet.from_cfg(case / "model.cfg")          # fresh random init
    p = tmp_path / "other.weights"
    other.save_weights(p)
    net.load_weights(p)
    h2 = net(x)
    assert net._fast_plan is not plan
    with torch.no_grad():
        e2 = other._run(x, keep_all=False)
    for a, b, c in zip(h2, e2, h1):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(a, c, rtol=1e-3, atol=1e-3)
    net(x)
    assert net._fast_plan is net._fast_plan                # unchanged weights: plan kept


def test_plan_rebuilt_after_load_state_dict_and_inplace_edit(tiny):
    case, net, x = tiny
    net(x)
    plan = net._fast_plan
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["layers.0.biases"] += 0.5
    net.load_state_dict(sd)
    net(x)
    assert net._fast_plan is not plan
    plan = net._fast_plan
    with torch.no_grad():
        net.layers[0].scales.mul_(1.5)
    h = net(x)
    assert net._fast_plan is not plan
    with torch.no_grad():
        e = net._run(x, keep_all=False)
    for a, b in zip(h, e):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_training_mode_keeps_autograd(tiny):
    _, net, x = tiny
    net.train()
    out = net(x)
    assert out[0].requires_grad and out[0].grad_fn is not None
    sum(o.sum() for o in out).backward()
    assert net.layers[0].weights.grad is not None
    net.eval()
    assert not net(x)[0].requires_grad                     # eval: the plan, no history
    xg = x.clone().requires_grad_(True)
    out = net(xg)                                          # an input that wants grad: the exact path
    out[0].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_exact_backend_and_batches(tiny):
    _, net, x = tiny
    fast = net(x)
    net.set_backend("exact")
    with torch.no_grad():
        exact = net(x)
        assert all(torch.equal(a, b) for a, b in zip(exact, net._run(x, keep_all=False)))
    net.set_backend("torch")
    xb = torch.cat([x, torch.rand_like(x), x])             # chunked execution keeps items independent
    hb = net(xb)
    for a, b in zip(hb, fast):
        assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[2], b[0], atol=1e-5)
    with pytest.raises(Exception):
        net.set_backend("nope")


def test_plan_built_in_inference_mode_works_outside(tiny):
    _, net, x = tiny
    with torch.inference_mode():                           # as Detector.forward calls it
        h1 = net(x)
    h2 = net(x)
    h3 = net(x.clone())
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(h1, h2, h3))


def test_copy_and_pickle_drop_the_plan(tiny):
    _, net, x = tiny
    h = net(x)
    c = copy.deepcopy(net)
    assert c._fast_plan is None
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    d = torch.load(buf, weights_only=False)
    p = pickle.loads(pickle.dumps(net))
    for m in (c, d, p):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(m(x), h))


def test_onnxruntime_backend(tiny):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    case, net, x = tiny
    net.set_backend("onnxruntime", threads=1)
    heads = net(x)
    res = oracle_case.compare(str(case), {i: h[0] for i, h in zip(net.output_layers, heads)}, heads_only=True)
    assert res["passed"], res["worst"]


@pytest.mark.slow
def test_openvino_backend(tiny):
    pytest.importorskip("openvino")
    case, net, x = tiny
    net.set_backend("openvino", threads=1)
    heads = net(x)
    res = oracle_case.compare(str(case), {i: h[0] for i, h in zip(net.output_layers, heads)}, heads_only=True)
    assert res["passed"], res["worst"]


# -- the plan's own kernels: mish in C, the yolo head's GEMM, the allocator setting ---------------------------
def _darknet_mish(x):
    """activations.c: x * tanh(softplus(x)), softplus = x above 20, exp(x) below -20 (float64)."""
    x = x.double()
    sp = torch.where(x > 20, x, torch.where(x < -20, torch.exp(x), torch.log1p(torch.exp(x))))
    return x * torch.tanh(sp)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_native_mish_matches_darknet(layout):
    from darknet_prn import native
    if not native.available():
        pytest.skip("C kernels not built")
    torch.manual_seed(0)
    x = torch.randn(2, 5, 37, 41) * 8
    x.view(-1)[:10] = torch.tensor([25., 20., 19.99, -20., -30., -87.5, -100., 100., 0., 1e-30])
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    ref = _darknet_mish(x)
    y = x.clone(memory_format=torch.preserve_format)
    assert native.mish_inplace(y) is y
    err = (y.double() - ref).abs()
    assert float(err.max()) < 4e-6 and float((err / ref.abs().clamp(min=1e-6)).max()) < 4e-6
    # a tensor the kernel cannot take is left to torch (the caller falls back)
    assert native.mish_inplace(x[:, ::2]) is None
    assert native.mish_inplace(x.double()) is None


def test_mish_network_plan_matches_exact():
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(NET.format(w=32, h=24) + conv(8, act="mish") + conv(6, 1, 1, 0, "mish")
                                + conv(4, 3, 2, 1, "mish", 0), warn=False).eval()
    kinds = [st.kind for st in net.fast_plan().steps]
    assert all(k.endswith("mish") for k in kinds), kinds
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        ref = net._run(x, keep_all=False)[0]
    assert torch.allclose(net(x)[0], ref, rtol=1e-5, atol=1e-5)
    from darknet_prn import precision
    if precision.cpu_has_bf16():        # bf16 plans: mish through float32 and back, as bf16 F.mish rounds it
        net.set_backend("torch", precision="bf16")
        assert float((net(x)[0] - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_yolo_head_gemm_in_place():
    net = Darknet.from_cfg_text(GEOMETRIES["yolo-head-gemm"], warn=False).eval()
    plan = net.fast_plan()
    head = [st.index for st in plan.steps if st.kind == "conv1x1(gemm->nchw)"]
    assert head == [1, 4] and plan._private == {1, 4}
    # small grids (13x13, 26x26) keep the channels-last conv (the copy stays in cache there)
    small = Darknet.from_cfg_text(GEOMETRIES["routes-shortcuts"], warn=False).eval().fast_plan()
    assert not any(st.kind == "conv1x1(gemm->nchw)" for st in small.steps)
    # so does a head conv that a route reads as well
    cfg = GEOMETRIES["yolo-head-gemm"].replace("new_coords=1\n", "new_coords=1\n[route]\nlayers=-2\n")
    plan2 = Darknet.from_cfg_text(cfg, warn=False).eval().fast_plan()
    assert [st.index for st in plan2.steps if st.kind == "conv1x1(gemm->nchw)"] == [5]


def test_allocator_setting(monkeypatch):
    import darknet_prn.allocator as allocator
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("DARKNET_PRN_KEEP_FREED_MEMORY", "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.delenv("DARKNET_PRN_KEEP_FREED_MEMORY")
    import platform
    assert allocator.keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
