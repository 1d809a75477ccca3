"""ONNX export (darknet_prn.export): oracle parity under ONNX Runtime, decoding, NMS, errors, atomic writes."""
import collections
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
sys.path.insert(0, str(SHARED / "oracle"))
import oracle_case  # noqa: E402
from conftest import CACHE  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from darknet_prn import Darknet, DarknetError  # noqa: E402
from darknet_prn import export as dexport  # noqa: E402
from darknet_prn.export import Decode, decode_heads, export_onnx, nms_reference  # noqa: E402

CASES = [Path(p) for p in oracle_case.list_cases(str(SHARED / "oracle" / "cases"))]
BIG = 30_000_000          # .weights floats above which a case is marked slow
HEAVY = 3.0               # ... or BFLOPs at the run size (densenet201: 306 layers, 4.2 BFLOPs)


def _meta(case):
    return json.loads((case / "case.json").read_text())


def _slow(case):
    m = _meta(case)
    return m["weights_floats"] > BIG or m["bflops_run"] > HEAVY


def _params(cases):
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if _slow(c) else []) for c in cases]


def _case(name):
    return next(c for c in CASES if c.name == name)


@pytest.fixture(scope="session")
def weights_dir():
    return CACHE          # the materialized oracle weights shared with the other test files


def _load(case, weights_dir):
    m = oracle_case.materialize(str(case), str(weights_dir / case.name))
    net = Darknet.from_cfg(case / "model.cfg").eval()
    net.load_weights(m.weights)
    return net, np.load(m.input)[None], m.weights


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _names(net, layers=None):
    return [f"{net.graph.layers[i].type}_{i}" for i in (net.output_layers if layers is None else layers)]


def _exact(net, x):
    with torch.no_grad():
        return [o.detach().numpy() for o in net.layer_outputs(torch.from_numpy(x))]


# ------------------------------------------------------------------------------------------------------------
# every oracle case: static (N=1) and dynamic batch (N=1, N=3) against Darknet's outputs
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _params(CASES))
def test_oracle_case_exports_and_matches(case, weights_dir, tmp_path):
    net, x, _ = _load(case, weights_dir)
    heads = net.output_layers

    static = tmp_path / "static.onnx"
    res = export_onnx(net, static, verify=False)
    assert res.path == str(static) and static.exists()
    onnx.checker.check_model(str(static), full_check=True)
    sess = _session(static)
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert [o.name for o in sess.get_outputs()] == _names(net)
    assert sess.get_inputs()[0].shape == [1] + list(net.graph.input_shape)
    outs = sess.run(None, {"images": x})
    r = oracle_case.compare(str(case), {i: o[0] for i, o in zip(heads, outs)}, heads_only=True)
    assert r["passed"], r
    exact = _exact(net, x)
    for i, o in zip(heads, outs):             # exactly what layer_outputs gives: same shape
        assert o.shape == exact[i].shape

    dyn = tmp_path / "dynamic.onnx"
    export_onnx(net, dyn, dynamic_batch=True, verify=False)
    sess = _session(dyn)
    assert sess.get_inputs()[0].shape[0] == "batch"
    r = oracle_case.compare(str(case), {i: o[0] for i, o in zip(heads, sess.run(None, {"images": x}))},
                            heads_only=True)
    assert r["passed"], r
    other = np.random.default_rng(1).random(x.shape, dtype=np.float32)
    outs3 = sess.run(None, {"images": np.concatenate([x, other, x])})
    for item in (0, 2):
        r = oracle_case.compare(str(case), {i: o[item] for i, o in zip(heads, outs3)}, heads_only=True)
        assert r["passed"], (item, r)
    exact_other = _exact(net, other)
    for i, o in zip(heads, outs3):            # the middle item is computed independently
        ref = exact_other[i][0]
        assert np.abs(o[1] - ref).max() <= 2e-3 * max(1.0, float(ref.std()))


EVERY_LAYER_FAST = ("synthetic-layers", "tiny-yolo_xnor", "yolov2-tiny", "yolov4-tiny")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[] if c.name in EVERY_LAYER_FAST
                                               else [pytest.mark.slow]) for c in CASES])
def test_every_layer_as_output_matches_oracle(case, weights_dir, tmp_path):
    """outputs= exposes every layer: all of Darknet's per-layer statistics and samples match (dynamic, N=3)."""
    net, x, _ = _load(case, weights_dir)
    p = tmp_path / "all.onnx"
    export_onnx(net, p, dynamic_batch=True, verify=False, outputs=range(len(net.graph.layers)))
    outs = _session(p).run(None, {"images": np.concatenate([x, x, x])})
    assert len(outs) == len(net.graph.layers)
    oracle_case.assert_matches(str(case), {i: o[2] for i, o in enumerate(outs)})


# ------------------------------------------------------------------------------------------------------------
# layer coverage beyond the oracle cases: every layer's output against layer_outputs
# ------------------------------------------------------------------------------------------------------------
COVER_CFG = """[net]
width=26
height=26
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[maxpool]
size=2
stride=1
[maxpool]
size=3
stride=2
[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
dilation=2
activation=mish
[convolutional]
filters=8
size=2
pad=1
dilation=2
activation=swish
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
antialiasing=1
activation=hard_mish
[upsample]
stride=2
[upsample]
stride=-2
scale=0.5
[convolutional]
filters=16
size=1
activation=elu
[shortcut]
from=5
activation=linear
[maxpool]
size=3
stride=2
antialiasing=1
[route]
layers=10
[shortcut]
from=11
alpha=0.5
beta=2
activation=leaky
[route]
layers=9
groups=2
group_id=1
[reorg3d]
stride=2
[reorg3d]
stride=2
reverse=1
[maxpool]
maxpool_depth=1
out_channels=4
stride=1
size=1
[local_avgpool]
size=3
stride=2
[route]
layers=-3
[convolutional]
filters=8
size=1
activation=logistic
[sam]
from=-2
[avgpool]
[scale_channels]
from=-2
activation=selu
[partial_shortcut]
from=-3
channels=5
activation=relu6
[shortcut]
from=-2,-5
weights_type=per_channel
weights_normalization=softmax
activation=gelu
[convolutional]
batch_normalize=1
binary=1
filters=8
size=3
pad=1
activation=leaky
[batchnorm]
[activation]
activation=tanh
[dropout]
probability=.5
[reorg]
stride=2
[reorg]
stride=2
reverse=1
[normalization]
size=5
[crop]
crop_height=3
crop_width=3
[connected]
output=20
batch_normalize=1
activation=loggy
[softmax]
groups=2
temperature=2
"""

ACTS = ["logistic", "loggy", "relu", "relu6", "elu", "selu", "gelu", "relie", "ramp", "leaky", "tanh", "plse",
        "stair", "hardtan", "lhtan", "swish", "mish", "hard_mish", "normalize_channels",
        "normalize_channels_softmax", "normalize_channels_softmax_maxval", "linear"]


def _acts_cfg():
    body = "[net]\nwidth=7\nheight=5\nchannels=3\n[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=linear\n"
    for a in ACTS:
        body += f"[route]\nlayers=0\n[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\nactivation={a}\n"
    return body


def _every_layer(net, tmp_path, n, lo=0.0, hi=1.0, **kw):
    """Export every layer as an output; max |ONNX - layer_outputs| / std per layer for n random inputs."""
    p = tmp_path / "net.onnx"
    export_onnx(net, p, verify=False, outputs=range(len(net.graph.layers)), **kw)
    g = torch.Generator().manual_seed(3)
    x = torch.rand((n,) + tuple(net.graph.input_shape), generator=g) * (hi - lo) + lo
    outs = _session(p).run(None, {"images": x.numpy()})
    ref = _exact(net, x.numpy())
    worst = []
    for i, (o, r) in enumerate(zip(outs, ref)):
        assert o.shape == r.shape, i
        worst.append(float(np.abs(o - r).max()) / max(1e-3, float(r.std())))
    return p, worst


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "nofuse"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_layer_coverage_every_layer(tmp_path, fuse, dynamic):
    torch.manual_seed(0)
    net = Darknet.from_cfg_text(COVER_CFG, path="cover.cfg").eval()
    assert {l.type for l in net.graph.layers} >= {"maxpool", "upsample", "shortcut", "reorg3d", "reorg", "sam",
                                                  "scale_channels", "partial_shortcut", "local_avgpool", "crop"}
    assert sum(l.p.get("strided", False) for l in net.graph.layers) == 2
    p, worst = _every_layer(net, tmp_path, 3 if dynamic else 1, fuse=fuse, dynamic_batch=dynamic)
    assert max(worst) < 1e-4, worst
    ops = collections.Counter(n.op_type for n in onnx.load(str(p)).graph.node)
    n_bn = sum(1 for l in net.graph.layers if l.type == "convolutional" and l.p["bn"])
    assert ops["BatchNormalization"] == 1 + (0 if fuse else n_bn)       # 1: the [batchnorm] layer


@pytest.mark.parametrize("opset", [dexport.MIN_OPSET, 13, dexport.MAX_OPSET])
def test_activations_decomposed_into_standard_ops(tmp_path, opset):
    torch.manual_seed(1)
    net = Darknet.from_cfg_text(_acts_cfg(), path="acts.cfg").eval()
    p, worst = _every_layer(net, tmp_path, 2, lo=-4.0, hi=4.0, dynamic_batch=True, opset=opset)
    assert max(worst) < 1e-4, dict(zip(range(len(worst)), worst))
    m = onnx.load(str(p))
    assert {o.domain for o in m.opset_import} <= {"", "ai.onnx"}
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    ops = {n.op_type for n in m.graph.node}
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    assert not ops & {"Mish", "HardSwish", "Gelu"}           # decomposed, not the opset-18+/20 ops
    assert {"Softplus", "Tanh", "Sigmoid"} <= ops


# ------------------------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------------------------
def darknet_decode(heads, layers, net_w, net_h):
    """Independent transcription of Darknet's get_yolo_detections / get_gaussian_yolo_detections /
    get_region_boxes / get_detection_detections for one image, every cell x anchor kept, no thresholds;
    boxes in input pixels. Rows: (cx, cy, w, h, objectness, probs...)."""
    rows = []
    for out, l in zip(heads, layers):
        p = l.p
        o = np.asarray(out, np.float64).reshape(-1)
        if l.type in ("yolo", "gaussian_yolo"):
            c, lh, lw = l.in_shape
            per = p["classes"] + (9 if l.type == "gaussian_yolo" else 5)
            wh = lw * lh

            def e(n, i, k):
                return o[n * wh * per + k * wh + i]
            for i in range(wh):
                row, col = divmod(i, lw)
                for n, m in enumerate(p["mask"]):
                    aw, ah = p["anchors"][2 * m], p["anchors"][2 * m + 1]
                    if l.type == "yolo":
                        x, y, tw, th, obj = (e(n, i, k) for k in range(5))
                        cls = [e(n, i, 5 + j) for j in range(p["classes"])]
                        if p["new_coords"]:
                            bw, bh = tw * tw * 4 * aw / net_w, th * th * 4 * ah / net_h
                        else:
                            bw, bh = np.exp(tw) * aw / net_w, np.exp(th) * ah / net_h
                        bx, by = (col + x) / lw, (row + y) / lh
                        probs = [obj * cj for cj in cls]
                    else:
                        x, sx, y, sy, tw, sw, th, sh, obj = (e(n, i, k) for k in range(9))
                        bw, bh = np.exp(tw) * aw / net_w, np.exp(th) * ah / net_h
                        bx, by = (col + x) / lw, (row + y) / lh
                        if p["yolo_point"] == "left_top":
                            bx, by = bx + bw / 2, by + bh / 2
                        elif p["yolo_point"] == "right_bottom":
                            bx, by = bx - bw / 2, by - bh / 2
                        uc = (sx + sy + sw + sh) / 4.0
                        probs = [obj * e(n, i, 9 + j) * (1.0 - uc) for j in range(p["classes"])]
                    rows.append([bx * net_w, by * net_h, bw * net_w, bh * net_h, obj] + probs)
        elif l.type == "region":
            c, lh, lw = l.in_shape
            num, C = p["num"], p["classes"]
            per = C + 5
            for i in range(lw * lh):
                row, col = divmod(i, lw)
                for n in range(num):
                    idx = (i * num + n) * per
                    lg = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
                    bx = (col + lg(o[idx])) / lw
                    by = (row + lg(o[idx + 1])) / lh
                    bw = np.exp(o[idx + 2]) * p["anchors"][2 * n] / lw
                    bh = np.exp(o[idx + 3]) * p["anchors"][2 * n + 1] / lh
                    scale = o[idx + 4]
                    rows.append([bx * net_w, by * net_h, bw * net_w, bh * net_h, scale]
                                + [scale * o[idx + 5 + j] for j in range(C)])
        else:  # detection
            side, num, C = p["side"], p["num"], p["classes"]
            for i in range(side * side):
                row, col = divmod(i, side)
                for n in range(num):
                    scale = o[side * side * C + i * num + n]
                    bi = side * side * (C + num) + (i * num + n) * 4
                    pw = 2 if p["sqrt"] else 1
                    b = [(o[bi] + col) / side, (o[bi + 1] + row) / side, o[bi + 2] ** pw, o[bi + 3] ** pw]
                    rows.append([b[0] * net_w, b[1] * net_h, b[2] * net_w, b[3] * net_h, scale]
                                + [scale * o[i * C + j] for j in range(C)])
    return np.array(rows)


def _check_decode(net, x, tmp_path, dynamic=True):
    p = tmp_path / "decode.onnx"
    res = export_onnx(net, p, decode=True, dynamic_batch=dynamic, verify=False)
    sess = _session(p)
    assert [o.name for o in sess.get_outputs()] == ["detections"]
    det = sess.run(None, {"images": x})[0]
    exact = _exact(net, x)
    heads = [exact[i] for i in net.output_layers]
    layers = [net.graph.layers[i] for i in net.output_layers]
    C = layers[0].p["classes"]
    assert res.outputs[0][1][1:] == [det.shape[1], 5 + C]
    ours = decode_heads(net, [torch.from_numpy(h) for h in heads]).numpy()
    scale = np.maximum(1.0, np.abs(ours))
    assert det.shape == ours.shape == (x.shape[0], det.shape[1], 5 + C)
    assert np.all(np.abs(det - ours) <= 2e-5 * scale + 1e-5)                # ONNX == PyTorch decoding
    for b in range(x.shape[0]):
        ref = darknet_decode([h[b] for h in heads], layers, net.graph.width, net.graph.height)
        assert ref.shape == det[b].shape
        assert np.all(np.abs(det[b] - ref) <= 1e-4 * np.maximum(1.0, np.abs(ref))), b  # == Darknet's formulas
    _check_postprocess(net, heads, layers, det)
    return det


def _check_postprocess(net, heads, layers, det):
    """Equal to darknet_prn.postprocess (what `detect` decodes) before thresholds and NMS."""
    try:
        from darknet_prn import postprocess as pp
    except ImportError:
        return
    W, H = net.graph.width, net.graph.height
    for b in range(det.shape[0]):
        d = pp.get_network_boxes([h[b] for h in heads], layers, W, H, W, H, thresh=-1.0, letter=False)
        assert len(d) == det.shape[1]
        assert np.allclose(d.boxes * [W, H, W, H], det[b, :, :4], rtol=1e-4, atol=1e-3)
        assert np.allclose(d.probs, det[b, :, 5:], rtol=1e-4, atol=1e-6)
        obj = det[b, :, 4].copy()
        k = 0
        for l in layers:          # Darknet's region detections carry objectness 1; ours the σ(obj) score
            rows = len(ref_rows(l))
            if l.type == "region":
                obj[k:k + rows] = 1
            k += rows
        assert np.allclose(d.objectness, obj, rtol=1e-5, atol=1e-6)


def ref_rows(l):
    if l.type == "detection":
        return range(l.p["side"] ** 2 * l.p["num"])
    n = l.p["num"] if l.type == "region" else len(l.p["mask"])
    return range(l.in_shape[1] * l.in_shape[2] * n)


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny", "yolov7-tiny", "yolov2-tiny"])
def test_decode_oracle_nets(name, weights_dir, tmp_path):
    """yolov4-tiny: scale_x_y=1.05; yolov7-tiny: new_coords=1, scale_x_y=2; yolov2-tiny: [region]."""
    net, x, _ = _load(_case(name), weights_dir)
    x2 = np.concatenate([x, np.random.default_rng(2).random(x.shape, dtype=np.float32)])
    _check_decode(net, x2, tmp_path)


GAUSS_CFG = """[net]
width=40
height=32
channels=3
[convolutional]
filters=8
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters={f}
size=1
activation=linear
[Gaussian_yolo]
mask=0,1
anchors=5,6, 10,14, 23,27
classes=3
num=3
yolo_point={point}
scale_x_y=1.1
"""

DETECTION_CFG = """[net]
width=24
height=24
channels=3
[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky
[connected]
output=56
activation=linear
[detection]
classes=4
coords=4
rescore=1
side=2
num=2
softmax=1
sqrt=1
"""


@pytest.mark.parametrize("point", ["center", "left_top", "right_bottom"])
def test_decode_gaussian_yolo(point, tmp_path):
    torch.manual_seed(4)
    net = Darknet.from_cfg_text(GAUSS_CFG.format(f=2 * (9 + 3), point=point), path="g.cfg").eval()
    x = np.random.default_rng(4).random((2, 3, 32, 40), dtype=np.float32)
    det = _check_decode(net, x, tmp_path)
    assert det.shape == (2, 16 * 20 * 2, 5 + 3)


def test_decode_detection_yolov1(tmp_path):
    torch.manual_seed(5)
    net = Darknet.from_cfg_text(DETECTION_CFG, path="d.cfg").eval()
    x = np.random.default_rng(5).random((2, 3, 24, 24), dtype=np.float32)
    det = _check_decode(net, x, tmp_path)
    assert det.shape == (2, 2 * 2 * 2, 5 + 4)


def test_nms_selects_what_darknet_keeps(weights_dir, tmp_path):
    net, x, _ = _load(_case("yolov3-tiny"), weights_dir)
    p = tmp_path / "nms.onnx"
    res = export_onnx(net, p, nms=True, dynamic_batch=True, conf_thresh=0.3, iou_thresh=0.45, verify=False)
    assert [n for n, _ in res.outputs] == ["detections", "selected_indices"]
    m = onnx.load(str(p))
    nms = [n for n in m.graph.node if n.op_type == "NonMaxSuppression"]
    assert len(nms) == 1 and [a.i for a in nms[0].attribute if a.name == "center_point_box"] == [1]
    x2 = np.concatenate([x, np.random.default_rng(6).random(x.shape, dtype=np.float32)])
    det, sel = _session(p).run(None, {"images": x2})
    assert sel.dtype == np.int64 and sel.ndim == 2 and sel.shape[1] == 3
    got = {tuple(int(v) for v in r) for r in sel}
    assert got == nms_reference(det, 0.3, 0.45) and len(got) > 10
    assert {b for b, _, _ in got} == {0, 1}
    # Darknet's do_nms_sort (darknet_prn.postprocess) keeps the same (box, class) pairs
    try:
        from darknet_prn import postprocess as pp
    except ImportError:
        return
    for b in range(2):
        probs = np.where(det[b, :, 5:] > np.float32(0.3), det[b, :, 5:], 0).astype(np.float32)
        ident = np.arange(1, det.shape[1] + 1, dtype=np.float32)        # objectness carries the row index
        kept = pp.nms(pp.Detections(det[b, :, :4].copy(), ident, probs), 0.45)
        darknet = {(b, int(k), int(o) - 1) for o, row in zip(kept.objectness, kept.probs)
                   for k in np.nonzero(row)[0]}
        assert darknet == {s for s in got if s[0] == b}


def test_decode_errors(tmp_path, weights_dir):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    with pytest.raises(DarknetError, match=r"decoding needs detection heads .*\[softmax\] layer 13"):
        export_onnx(net, tmp_path / "c.onnx", decode=True)
    with pytest.raises(DarknetError, match="decoding needs detection heads"):
        export_onnx(net, tmp_path / "c.onnx", nms=True)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------------
# options, verification, metadata, API
# ------------------------------------------------------------------------------------------------------------
def test_verify_half_nofuse_and_metadata(weights_dir, tmp_path):
    case = _case("yolov3-tiny-prn")
    net, x, _ = _load(case, weights_dir)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = net.export_onnx(tmp_path / "v.onnx", verify=True, dynamic_batch=True)     # Darknet.export_onnx
    assert res.verified and 0 <= res.max_abs_diff < 1e-4 and set(res.diffs) == set(_names(net))
    assert "max abs difference" in res.summary()
    for k, v in net.state_dict().items():      # folding happened on a copy
        assert torch.equal(v, before[k]), k
    m = onnx.load(str(tmp_path / "v.onnx"))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["darknet_prn.width"] == "160" and json.loads(props["darknet_prn.heads"])[0]["type"] == "yolo"
    assert m.producer_name == "darknet-prn"
    assert not any(n.op_type == "BatchNormalization" for n in m.graph.node)

    res = export_onnx(net, tmp_path / "h.onnx", half=True, verify=True)
    assert res.verified
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(tmp_path / "h.onnx")).graph.initializer)
    sess = _session(tmp_path / "h.onnx")
    assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
    outs = sess.run(None, {"images": x})
    r = oracle_case.compare(str(case), {i: o[0] for i, o in zip(net.output_layers, outs)}, heads_only=True,
                            tol=3e-2)
    assert r["passed"], r

    res = export_onnx(net, tmp_path / "s3.onnx", batch=3, fuse=False, verify=True)
    assert res.inputs == [("images", [3, 3, 160, 160])]
    assert any(n.op_type == "BatchNormalization" for n in onnx.load(str(tmp_path / "s3.onnx")).graph.node)


def test_verify_skipped_without_onnxruntime(monkeypatch, weights_dir, tmp_path):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    monkeypatch.setattr(dexport, "_onnxruntime", lambda: None)
    res = export_onnx(net, tmp_path / "a.onnx")
    assert not res.verified and "onnxruntime is not installed" in res.note
    with pytest.raises(DarknetError, match="needs onnxruntime"):
        export_onnx(net, tmp_path / "b.onnx", verify=True)
    assert not (tmp_path / "b.onnx").exists()


# ------------------------------------------------------------------------------------------------------------
# errors and atomic writes
# ------------------------------------------------------------------------------------------------------------
RNN_CFG = "[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nfilters=2\nsize=1\n[rnn]\noutput=4\nhidden=4\n"


def _leftovers(d):
    return sorted(p.name for p in Path(d).iterdir())


@pytest.mark.parametrize("opset", [5, 10, dexport.MAX_OPSET + 1, 99, "17", 17.0, True])
def test_bad_opset(opset, weights_dir, tmp_path):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    with pytest.raises(DarknetError, match=rf"^opset .* is not supported: use an integer from 11 to "
                                           rf"{dexport.MAX_OPSET}$"):
        export_onnx(net, tmp_path / "x.onnx", opset=opset)
    assert _leftovers(tmp_path) == []


def test_unsupported_layer(tmp_path):
    net = Darknet.from_cfg_text(RNN_CFG, path="rnn.cfg")
    with pytest.raises(DarknetError) as e:
        export_onnx(net, tmp_path / "x.onnx")
    msg = str(e.value)
    assert msg == ("rnn.cfg:8: [rnn] layer 1 cannot be exported to ONNX (recurrent layers keep state between "
                   "calls; [history] does not run)")
    assert _leftovers(tmp_path) == []


def test_unwritable_paths(weights_dir, tmp_path):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    with pytest.raises(DarknetError, match="does not exist"):
        export_onnx(net, tmp_path / "missing" / "x.onnx")
    with pytest.raises(DarknetError, match="is a directory"):
        export_onnx(net, tmp_path)
    for bad in ([99], [0, 0], ["x"]):
        with pytest.raises(DarknetError, match="outputs must be"):
            export_onnx(net, tmp_path / "o.onnx", outputs=bad)
    assert _leftovers(tmp_path) == []


def test_readonly_directory(weights_dir, tmp_path):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(DarknetError, match="not writable"):
            export_onnx(net, ro / "x.onnx")
        assert _leftovers(ro) == []
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("where", ["checker", "verify", "interrupt"])
def test_failed_export_leaves_nothing(where, monkeypatch, weights_dir, tmp_path):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")

    def boom(*a, **k):
        if where == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("broken")
    if where == "checker":
        monkeypatch.setattr(onnx.checker, "check_model", boom)
        err = DarknetError
    elif where == "verify":
        monkeypatch.setattr(dexport, "_verify", lambda *a, **k: (_ for _ in ()).throw(
            DarknetError("verification failed: test")))
        err = DarknetError
    else:
        monkeypatch.setattr(onnx.checker, "check_model", boom)
        err = KeyboardInterrupt
    with pytest.raises(err):
        export_onnx(net, target, verify=True)
    assert _leftovers(tmp_path) == ["model.onnx"]
    assert target.read_bytes() == b"previous"


def test_successful_write_is_a_plain_file(weights_dir, tmp_path):
    net, _, _ = _load(_case("synthetic-layers"), weights_dir)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    export_onnx(net, target, verify=False)
    assert _leftovers(tmp_path) == ["model.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)
    onnx.checker.check_model(str(target))


def test_decode_module_is_torch_only():
    net = Darknet.from_cfg_text(GAUSS_CFG.format(f=24, point="center"), path="g.cfg").eval()
    d = Decode(net.graph)
    assert d.boxes == 16 * 20 * 2 and d.classes == 3


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------
def test_cli_export(weights_dir, tmp_path, capsys):
    from darknet_prn.cli import main
    case = _case("yolov3-tiny-prn")
    _, x, w = _load(case, weights_dir)
    out = tmp_path / "m.onnx"
    assert main(["export", str(case / "model.cfg"), w, "-o", str(out), "--width", "96", "--height", "64",
                 "--dynamic-batch", "--decode"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "max abs difference vs PyTorch" in text
    sess = _session(out)
    assert sess.get_inputs()[0].shape == ["batch", 3, 64, 96]
    assert sess.get_outputs()[0].shape == ["batch", (2 * 3 + 4 * 6) * 3, 85]

    assert main(["export", str(case / "model.cfg"), w, "-o", str(out), "--opset", "99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("darknet-prn export: error: opset 99 is not supported: use an integer from 11 to "
                   f"{dexport.MAX_OPSET}")
    assert main(["export", str(case / "model.cfg"), w, "-o", str(tmp_path / "no" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert main(["export", str(case / "model.cfg"), w, "-o", str(out), "--no-fuse", "--no-verify"]) == 0
    assert "not verified (--no-verify)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------
# OpenCV's DNN module runs the exported files (OpenCV 5 has no Darknet importer, its users need the ONNX;
# readNetFromONNX is the same importer family in 4.x, which is what CI installs)
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov3-tiny-prn", "yolov4-tiny", "yolov7-tiny",
                                  pytest.param("yolov4", marks=pytest.mark.slow)])
def test_opencv_runs_export(name, weights_dir, tmp_path):
    cv2 = pytest.importorskip("cv2")
    case = _case(name)
    net, x, _ = _load(case, weights_dir)
    p = tmp_path / "m.onnx"
    export_onnx(net, p, verify=False)
    cv = cv2.dnn.readNetFromONNX(str(p))
    cv.setInput(x)
    outs = cv.forward(_names(net))
    r = oracle_case.compare(str(case), {i: o.reshape(-1) for i, o in zip(net.output_layers, outs)},
                            heads_only=True)
    assert r["passed"], r


OPENCV5 = ROOT / "build" / "opencv5" / "bin" / "python"


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov3-tiny-prn", "yolov4-tiny", "yolov7-tiny",
                                  pytest.param("yolov4", marks=pytest.mark.slow)])
def test_opencv5_runs_export(name, weights_dir, tmp_path):
    """OpenCV >= 5 (no Darknet importer any more) in its own venv (`make opencv5`, run by CI)."""
    import json
    import subprocess
    if not OPENCV5.exists():
        pytest.skip("no OpenCV 5 venv: run `make opencv5`")
    case = _case(name)
    net, x, _ = _load(case, weights_dir)
    p = tmp_path / "m.onnx"
    export_onnx(net, p, verify=False)
    with torch.no_grad():
        outs = net.layer_outputs(torch.from_numpy(x))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "ref.npz", **{n: outs[i].numpy() for n, i in zip(_names(net), net.output_layers)})
    r = subprocess.run([str(OPENCV5), str(ROOT / "tests" / "tools" / "opencv_onnx_check.py"), str(p),
                        str(tmp_path / "x.npy"), str(tmp_path / "ref.npz")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert int(res["opencv"].split(".")[0]) >= 5
    assert set(res["diffs"]) == set(_names(net))
    for i, n in zip(net.output_layers, _names(net)):
        assert res["diffs"][n] <= 2e-3 * float(outs[i].std()), (n, res)
