"""Head decoding, NMS and Darknet's output order, checked against literal (loop-by-loop) translations of
Darknet's C functions and hand-computed cases. No torch, no weights."""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from darknet_prn import postprocess as post
from darknet_prn.postprocess import F32, Detections

# ---------------------------------------------------------------------------------------------------------------
# literal references (scalar float32, as the C code)


def ref_iou(a, b):
    def overlap(x1, w1, x2, w2):
        l1, l2 = F32(x1 - w1 / F32(2)), F32(x2 - w2 / F32(2))
        r1, r2 = F32(x1 + w1 / F32(2)), F32(x2 + w2 / F32(2))
        return F32(min(r1, r2) - max(l1, l2))
    w = overlap(a[0], a[2], b[0], b[2])
    h = overlap(a[1], a[3], b[1], b[3])
    i = F32(0) if (w < 0 or h < 0) else F32(w * h)
    u = F32(F32(a[2] * a[3] + b[2] * b[3]) - i)
    return F32(0) if (i == 0 or u == 0) else F32(i / u)


def ref_do_nms_sort(boxes, obj, probs, classes, thresh):
    """Darknet's do_nms_sort on Python lists (qsort = stable sort, as glibc's merge sort)."""
    dets = [dict(bbox=boxes[i], objectness=obj[i], prob=list(probs[i]), id=i) for i in range(len(obj))]
    total = len(dets)
    k = total - 1
    i = 0
    while i <= k:
        if dets[i]["objectness"] == 0:
            dets[i], dets[k] = dets[k], dets[i]
            k -= 1
            i -= 1
        i += 1
    total = k + 1
    dets = dets[:total]
    for k in range(classes):
        dets.sort(key=lambda d: -d["prob"][k])
        for i in range(total):
            if dets[i]["prob"][k] == 0:
                continue
            for j in range(i + 1, total):
                if ref_iou(dets[i]["bbox"], dets[j]["bbox"]) > F32(thresh):
                    dets[j]["prob"][k] = F32(0)
    return dets


def random_dets(rng, n, classes, zero_obj=0.0, ties=False):
    xy = rng.random((n, 2)).astype(F32)
    wh = (rng.random((n, 2)) * 0.4 + 0.02).astype(F32)
    boxes = np.concatenate([xy, wh], 1).astype(F32)
    probs = rng.random((n, classes)).astype(F32)
    if ties:
        probs = (np.round(probs * 4) / 4).astype(F32)
    probs = np.where(probs > 0.4, probs, 0).astype(F32)
    obj = rng.random(n).astype(F32)
    obj[rng.random(n) < zero_obj] = 0
    return Detections(boxes, obj, probs)


# ---------------------------------------------------------------------------------------------------------------
# IoU / DIoU


def test_box_iou_matches_scalar_reference():
    rng = np.random.default_rng(0)
    d = random_dets(rng, 60, 1)
    for i in range(0, 60, 7):
        got = post.box_iou(d.boxes[i], d.boxes)
        want = np.array([ref_iou(d.boxes[i], b) for b in d.boxes], F32)
        assert np.array_equal(got, want)


def test_box_iou_hand_values():
    a = np.array([0.5, 0.5, 0.2, 0.2], F32)
    assert post.box_iou(a, a[None])[0] == pytest.approx(1.0)
    half = np.array([0.6, 0.5, 0.2, 0.2], F32)             # overlap 0.1 x 0.2 = .02, union .06
    assert post.box_iou(a, half[None])[0] == pytest.approx(1 / 3, rel=1e-5)
    far = np.array([0.9, 0.9, 0.1, 0.1], F32)
    assert post.box_iou(a, far[None])[0] == 0
    zero = np.array([0.5, 0.5, 0.0, 0.0], F32)              # I == 0 -> 0, not NaN
    assert post.box_iou(zero, zero[None])[0] == 0


def test_box_diou():
    a = np.array([0.5, 0.5, 0.2, 0.2], F32)
    b = np.array([0.6, 0.5, 0.2, 0.2], F32)
    # enclosing box 0.3 x 0.2 -> c = .13 ; d = .01 ; DIoU = 1/3 - (.01/.13)^beta
    assert post.box_diou(a, b[None], 0.6)[0] == pytest.approx(1 / 3 - (0.01 / 0.13) ** 0.6, rel=1e-4)
    assert post.box_diou(a, b[None], 1.0)[0] == pytest.approx(1 / 3 - 0.01 / 0.13, rel=1e-4)
    assert post.box_diou(a, a[None], 0.6)[0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------------
# NMS


@pytest.mark.parametrize("seed,n,classes,zero_obj,ties", [(1, 40, 5, 0.0, False), (2, 80, 12, 0.2, False),
                                                           (3, 50, 6, 0.1, True), (4, 1, 3, 0.0, False),
                                                           (5, 30, 80, 0.3, True)])
@pytest.mark.parametrize("matrix_max", [3000, 4, 0])       # precomputed pair matrix / per class / per row
def test_do_nms_sort_matches_reference_order_and_probs(seed, n, classes, zero_obj, ties, matrix_max, monkeypatch):
    monkeypatch.setattr(post, "_FULL_MATRIX_MAX", matrix_max)
    rng = np.random.default_rng(seed)
    d = random_dets(rng, n, classes, zero_obj, ties)
    got = post.nms(d, 0.45, "default", classes=classes)
    ref = ref_do_nms_sort([tuple(b) for b in d.boxes], list(d.objectness), [list(p) for p in d.probs],
                          classes, 0.45)
    assert len(got) == len(ref)
    ref_boxes = np.array([r["bbox"] for r in ref], F32).reshape(-1, 4)
    ref_probs = np.array([r["prob"] for r in ref], F32).reshape(-1, classes)
    assert np.array_equal(got.boxes, ref_boxes)
    assert np.array_equal(got.probs, ref_probs)


def test_nms_suppresses_overlaps_per_class_only():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]], F32)
    probs = np.array([[0.9, 0.0], [0.8, 0.7], [0.6, 0.0]], F32)
    d = post.nms(Detections(boxes, np.ones(3, F32), probs), 0.45)
    # class 0: box 1 overlaps box 0 (IoU ~ .9) -> suppressed; class 1 untouched (only one box)
    by_x = {round(float(b[0]), 2): p for b, p in zip(d.boxes, d.probs)}
    assert by_x[0.5][0] == F32(0.9) and by_x[0.51][0] == 0 and by_x[0.51][1] == F32(0.7)
    assert by_x[0.9][0] == F32(0.6)


def test_nms_threshold_is_strict_and_zero_objectness_dropped():
    a = np.array([0.5, 0.5, 0.2, 0.2], F32)
    b = np.array([0.6, 0.5, 0.2, 0.2], F32)                 # IoU = 1/3 exactly-ish
    iou = post.box_iou(a, b[None])[0]
    d = Detections(np.stack([a, b]), np.array([1, 1], F32), np.array([[0.9], [0.8]], F32))
    assert post.nms(d, float(iou)).probs[1, 0] == F32(0.8)    # IoU > thresh is required
    assert post.nms(d, float(iou) - 1e-3).probs[1, 0] == 0
    d0 = Detections(np.stack([a, b]), np.array([0, 1], F32), np.array([[0.9], [0.8]], F32))
    assert len(post.nms(d0, 0.45)) == 1


@pytest.mark.parametrize("matrix_max", [3000, 0])
def test_greedy_and_diou_nms(matrix_max, monkeypatch):
    monkeypatch.setattr(post, "_FULL_MATRIX_MAX", matrix_max)
    a = np.array([0.5, 0.5, 0.2, 0.2], F32)
    b = np.array([0.6, 0.5, 0.2, 0.2], F32)                 # IoU .333, DIoU(.6) = .333 - .215 = .118
    d = Detections(np.stack([a, b]), np.ones(2, F32), np.array([[0.9], [0.8]], F32))
    assert post.nms(d, 0.3, "default").probs[1, 0] == 0
    assert post.nms(d, 0.3, "cornersnms").probs[1, 0] == 0
    assert post.nms(d, 0.3, "greedynms").probs[1, 0] == F32(0.8)
    assert post.nms(d, 0.1, "greedynms").probs[1, 0] == 0
    assert post.nms(d, 0.2, "diounms", beta=1.0).probs[1, 0] == 0        # 1/3 - .0769 = .256 > .2
    assert post.nms(d, 0.2, "diounms", beta=0.6).probs[1, 0] == F32(0.8)


def test_nms_settings_take_last_yolo_or_region_head():
    heads = [SimpleNamespace(type="yolo", p=dict(nms_kind="greedynms", beta_nms=0.6, classes=3)),
             SimpleNamespace(type="yolo", p=dict(nms_kind="diounms", beta_nms=0.7, classes=3))]
    assert post.nms_settings(heads) == ("diounms", 0.7, 3)
    assert post.nms_settings([SimpleNamespace(type="detection", p=dict(classes=20))])[0] == "default"


# ---------------------------------------------------------------------------------------------------------------
# print order and format


def test_darknet_order_sorts_by_left_edge_best_class_first():
    boxes = np.array([[0.7, 0.5, 0.2, 0.2], [0.3, 0.5, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]], F32)
    probs = np.array([[0.3, 0.0, 0.6], [0.0, 0.8, 0.0], [0.1, 0.2, 0.0]], F32)   # det 2: nothing > .25
    recs = post.darknet_order(Detections(boxes, np.ones(3, F32), probs), 100, 50, 0.25)
    assert [(r["det"], r["class_id"]) for r in recs] == [(1, 1), (0, 2), (0, 0)]
    assert recs[0]["pixels"] == (20.0, 20.0, 20.0, 10.0)


def test_darknet_order_first_of_equal_probs_and_dont_show():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2]], F32)
    probs = np.array([[0.5, 0.5, 0.7]], F32)
    d = Detections(boxes, np.ones(1, F32), probs)
    assert [r["class_id"] for r in post.darknet_order(d, 10, 10, 0.25)] == [2, 0, 1]
    # a best class named dont_show* is skipped for "best" but still listed among the others
    recs = post.darknet_order(d, 10, 10, 0.25, names=["a", "b", "dont_show_c"])
    assert [r["class_id"] for r in recs] == [0, 1, 2]


def test_format_line_matches_darknet_printf():
    line = post.format_line("dog", F32(0.806560814), (124.0, 220.0, 258.0, 298.0))
    assert line == "dog: 81%\t(left_x:  124   top_y:  220   width:  258   height:  298)"
    assert post.format_line("horse", F32(0.3119), (-18.0, 192.0, 181.0, 105.0)) == \
        "horse: 31%\t(left_x:  -18   top_y:  192   width:  181   height:  105)"
    # C round() is half away from zero; %.0f of the percentage is round-half-even on the exact value
    assert post._c_round(np.array([2.5, -2.5, 0.49, -0.2]))[:3].tolist() == [3.0, -3.0, 0.0]
    assert math.copysign(1, post._c_round(np.array([-0.2]))[0]) == -1      # prints "-0" like Darknet
    assert post.format_line("x", F32(0.125), (0, 0, 0, 0)).startswith("x: 12%")


# ---------------------------------------------------------------------------------------------------------------
# box correction


@pytest.mark.parametrize("im_w,im_h", [(768, 576), (640, 424), (300, 900), (416, 416)])
def test_correct_yolo_boxes_inverts_letterbox(im_w, im_h):
    from darknet_prn.preprocess import letterbox_size
    net = 416
    new_w, new_h = letterbox_size(im_w, im_h, net, net)
    # a box given in image coordinates, mapped forward into the letterboxed network frame
    x, y, w, h = 0.3, 0.6, 0.2, 0.1
    fx = (x * new_w + (net - new_w) // 2) / net
    fy = (y * new_h + (net - new_h) // 2) / net
    fw, fh = w * new_w / net, h * new_h / net
    out = post.correct_yolo_boxes(np.array([[fx, fy, fw, fh]], F32), im_w, im_h, net, net, True)[0]
    # Darknet's correction uses (net - new)/2. (not the integer paste offset): up to half a network pixel apart
    assert out[0] == pytest.approx(x, abs=0.5 / new_w + 1e-6)
    assert out[1] == pytest.approx(y, abs=0.5 / new_h + 1e-6)
    assert out[2] == pytest.approx(w, rel=1e-5) and out[3] == pytest.approx(h, rel=1e-5)
    same = post.correct_yolo_boxes(np.array([[fx, fy, fw, fh]], F32), im_w, im_h, net, net, False)
    assert np.array_equal(same, np.array([[fx, fy, fw, fh]], F32))


# ---------------------------------------------------------------------------------------------------------------
# decoders


def yolo_layer(classes=2, mask=(0, 1), anchors=(10, 20, 30, 40, 50, 60), new_coords=0, kind="yolo"):
    return SimpleNamespace(type=kind, out_shape=None,
                           p=dict(classes=classes, num=len(anchors) // 2, mask=list(mask), anchors=list(anchors),
                                  scale_x_y=1.0, new_coords=new_coords, nms_kind="default", beta_nms=0.6,
                                  yolo_point="center"))


def test_decode_yolo_cells_row_major_then_anchors():
    C, n, H, W = 2, 2, 3, 4
    out = np.zeros((n, 5 + C, H, W), F32)
    out[:, 0:2] = 0.5
    out[1, 4, 2, 1] = 0.9      # anchor 1, row 2, col 1
    out[0, 4, 0, 3] = 0.8      # anchor 0, row 0, col 3
    out[0, 4, 2, 1] = 0.7      # anchor 0, row 2, col 1 (same cell as the first, lower anchor)
    out[:, 5] = 0.5
    out[:, 6] = 0.2
    out[1, 2, 2, 1] = math.log(2.0)
    d = post.decode_yolo(out.reshape(n * (5 + C), H, W), yolo_layer().p, 100, 200, 0.25)
    assert len(d) == 3
    np.testing.assert_allclose(d.objectness, [0.8, 0.7, 0.9], rtol=1e-6)
    np.testing.assert_allclose(d.boxes[0, :2], [(3 + 0.5) / 4, 0.5 / 3], rtol=1e-6)
    np.testing.assert_allclose(d.boxes[2], [(1 + 0.5) / 4, 2.5 / 3, 2 * 30 / 100, 40 / 200], rtol=1e-6)
    # prob = obj * cls, zeroed unless > thresh
    np.testing.assert_allclose(d.probs[2], [0.45, 0.0], rtol=1e-6)
    np.testing.assert_allclose(d.probs[0], [0.4, 0.0], rtol=1e-6)


def test_decode_yolo_new_coords_and_mask():
    out = np.zeros((1, 6, 1, 1), F32)
    out[0, :, 0, 0] = [0.5, 0.5, 0.5, 0.25, 0.9, 0.8]
    p = yolo_layer(classes=1, mask=[2], new_coords=1).p
    d = post.decode_yolo(out.reshape(6, 1, 1), p, 100, 100, 0.25)
    # w = tw^2 * 4 * anchor_w / net_w with the anchor of mask[0] = 2 -> (50, 60)
    np.testing.assert_allclose(d.boxes[0], [0.5, 0.5, 0.25 * 4 * 50 / 100, 0.0625 * 4 * 60 / 100], rtol=1e-6)
    np.testing.assert_allclose(d.probs[0], [0.72], rtol=1e-6)


def test_decode_gaussian_yolo():
    C = 1
    out = np.zeros((1, 9 + C, 1, 2), F32)
    out[0, :, 0, 1] = [0.5, 0.1, 0.5, 0.1, 0.0, 0.1, 0.0, 0.1, 0.9, 1.0]
    layer = yolo_layer(classes=C, mask=[0], kind="gaussian_yolo")
    d = post.decode_gaussian_yolo(out.reshape(10, 1, 2), layer.p, 100, 100, 0.25)
    assert len(d) == 1
    np.testing.assert_allclose(d.boxes[0], [(1 + 0.5) / 2, 0.5, 0.1, 0.2], rtol=1e-6)
    np.testing.assert_allclose(d.probs[0], [0.9 * (1 - 0.1)], rtol=1e-6)
    layer.p["yolo_point"] = "left_top"
    d2 = post.decode_gaussian_yolo(out.reshape(10, 1, 2), layer.p, 100, 100, 0.25)
    np.testing.assert_allclose(d2.boxes[0, :2], [0.75 + 0.05, 0.5 + 0.1], rtol=1e-6)


def test_decode_region_softmax_and_tree():
    H = W = 2
    num, C = 1, 3
    out = np.zeros((H * W, num, 4 + 1 + C), F32)
    out[:, 0, 4] = [0.9, 0.1, 0.5, 0.3]
    out[:, 0, 5:] = [0.2, 0.7, 0.1]
    p = dict(classes=C, num=num, coords=4, anchors=[1.0, 2.0], tree=None, out_shape=(num * 8, H, W))
    d = post.decode_region(out, p, 0.25)
    assert len(d) == 4 and np.all(d.objectness == 1)
    np.testing.assert_allclose(d.boxes[0], [0.5 / 2, 0.5 / 2, 1.0 / 2, 2.0 / 2], rtol=1e-6)
    np.testing.assert_allclose(d.probs[0], [0.0, 0.63, 0.0], rtol=1e-6)
    np.testing.assert_allclose(d.probs[2], [0.0, 0.35, 0.0], rtol=1e-6)
    assert not d.probs[1].any()
    # tree: 0 is the root of 1 and 2; probs become hierarchical products, only the deepest class > hier stays,
    # and (Darknet) they are not multiplied by the objectness, only gated by it
    p["tree"] = dict(n=3, parent=[-1, 0, 0], group_offset=[0, 1], group_size=[1, 2])
    out[:, 0, 5:] = [0.9, 0.6, 0.4]
    d = post.decode_region(out, p, 0.25, hier=0.5)
    np.testing.assert_allclose(d.probs[0], [0.0, 0.54, 0.0], rtol=1e-6)
    assert not d.probs[1].any()


def test_decode_detection_yolov1_layout():
    side, num, C = 2, 1, 2
    cells = side * side
    cls = np.tile(np.array([0.8, 0.2], F32), (cells, 1))
    conf = np.array([0.5, 0.0, 0.0, 1.0], F32)
    box = np.zeros((cells * num, 4), F32)
    box[3] = [0.5, 0.5, 0.3, 0.4]
    out = np.concatenate([cls.ravel(), conf, box.ravel()])
    d = post.decode_detection(out, dict(classes=C, num=num, side=side, coords=4, sqrt=1), 0.25)
    np.testing.assert_allclose(d.boxes[3], [(1 + 0.5) / 2, (1 + 0.5) / 2, 0.09, 0.16], rtol=1e-6)
    np.testing.assert_allclose(d.probs[:, 0], [0.4, 0, 0, 0.8], rtol=1e-6)
    assert d.objectness[1] == 0          # dropped by NMS's first loop
    assert len(post.nms(d, 0.45)) == 2


def test_get_network_boxes_concatenates_heads_in_order():
    out1 = np.zeros((7, 1, 1), F32)
    out1[:, 0, 0] = [0.5, 0.5, 0, 0, 0.9, 0.9, 0.1]
    out2 = np.zeros((7, 2, 2), F32)
    out2[4, 1, 1] = 0.8
    out2[6, 1, 1] = 0.9
    l1 = yolo_layer(classes=2, mask=[0])
    l2 = yolo_layer(classes=2, mask=[1])
    d = post.get_network_boxes([out1, out2], [l1, l2], 200, 100, 32, 32, 0.25, 0.5, False)
    assert len(d) == 2
    assert d.probs[0, 0] > 0 and d.probs[1, 1] > 0
    empty = post.get_network_boxes([np.zeros((7, 1, 1), F32)], [l1], 10, 10, 32, 32)
    assert len(empty) == 0 and empty.probs.shape == (0, 2)


def ref_diou(a, b, beta):
    top = min(F32(a[1] - a[3] / F32(2)), F32(b[1] - b[3] / F32(2)))
    bot = max(F32(a[1] + a[3] / F32(2)), F32(b[1] + b[3] / F32(2)))
    left = min(F32(a[0] - a[2] / F32(2)), F32(b[0] - b[2] / F32(2)))
    right = max(F32(a[0] + a[2] / F32(2)), F32(b[0] + b[2] / F32(2)))
    w, h = F32(right - left), F32(bot - top)
    c = F32(F32(w * w) + F32(h * h))
    iou = ref_iou(a, b)
    if c == 0:
        return iou
    d = F32(F32((a[0] - b[0]) * (a[0] - b[0])) + F32((a[1] - b[1]) * (a[1] - b[1])))
    return F32(iou - F32(math.pow(float(F32(d / c)), beta)))


def test_box_diou_matches_scalar_reference():
    rng = np.random.default_rng(3)
    d = random_dets(rng, 40, 1)
    for beta in (0.6, 0.8):
        for i in range(0, 40, 9):
            got = post.box_diou(d.boxes[i], d.boxes, beta)
            want = np.array([ref_diou(d.boxes[i], b, beta) for b in d.boxes], F32)
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)


ORACLE_CASES = Path(__file__).resolve().parents[1] / ".." / "shared" / "oracle" / "cases"


@pytest.mark.parametrize("case", ["Gaussian_yolov3_BDD", "yolov1-yolo", "yolov2-tiny", "yolov3-tiny", "yolov4-tiny",
                                  "yolov7-tiny"])
def test_decode_nms_on_darknet_head_tensors(case):
    """Darknet's own head outputs (oracle cases, random weights): every head type decodes, NMS leaves no two
    survivors of one class above the threshold, and the print order is by left edge."""
    from darknet_prn.graph import load_network
    d = ORACLE_CASES / case
    if not (d / "expected.npz").exists():
        pytest.skip(f"{d} missing")
    g = load_network(str(d / "model.cfg"))
    layers = [g.layers[i] for i in g.heads]
    npz = np.load(d / "expected.npz")
    outs = [npz["full_%03d" % i] for i in g.heads]
    dets = post.get_network_boxes(outs, layers, 640, 480, g.width, g.height, 0.25, 0.5, False)
    kind, beta, ncls = post.nms_settings(layers)
    kept = post.nms(dets, 0.45, kind, beta, ncls)
    assert np.isfinite(kept.boxes).all() and (kept.probs >= 0).all()     # yolov1 confidences are not bounded
    for k in range(kept.probs.shape[1]):
        alive = np.nonzero(kept.probs[:, k])[0]
        if len(alive) > 1:
            s = post._pair_score(kept.boxes[alive], kept.boxes[alive], kind, beta)
            np.fill_diagonal(s, 0)
            assert (s <= F32(0.45)).all(), (case, k)
    recs = post.darknet_order(kept, 640, 480, 0.25)
    lefts = [r["box"][0] - r["box"][2] / F32(2) for r in recs]
    assert lefts == sorted(lefts)
