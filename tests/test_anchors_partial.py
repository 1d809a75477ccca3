"""`calc-anchors` (Darknet's calc_anchors k-means) and `partial` (Darknet's partial)."""
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import cli
from darknet_prn.anchors import format_anchors, kmeans, label_sizes, mean_iou, sort_by_area

ROOT = Path(__file__).resolve().parents[1]
MAP = (ROOT / ".." / "shared" / "oracle" / "map").resolve()


def run_cli(args, capsys):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def darknet_anchor_runs():
    """(anchors (6, 2) as printed, printed avg IoU text) of the three oracle runs."""
    runs = []
    for k in range(3):
        text = (MAP / "runs" / f"calc_anchors_{k}.stdout").read_text()
        iou = text.split("avg IoU = ")[1].split(" %")[0]
        a = np.array([float(v) for v in (MAP / "runs" / f"anchors_{k}.txt").read_text().split(",")]).reshape(-1, 2)
        assert format_anchors(a, 416) in text
        runs.append((a, iou))
    return runs


@pytest.fixture
def sizes(monkeypatch):
    monkeypatch.chdir(MAP)
    s, counts, n = label_sizes("coco6.data", 416, 416)
    assert len(s) == 28 and n == 6
    return s


def test_darknet_anchor_sets_are_fixed_points_with_its_mean_iou(sizes):
    for anchors, iou in darknet_anchor_runs():
        centers, _ = kmeans(sizes, 6, init=anchors)
        final = sort_by_area(centers)
        assert format_anchors(final, 416) == format_anchors(anchors, 416)      # k-means stays there
        assert f"{mean_iou(sizes, final):2.2f}" == iou                          # Darknet's printed mean IoU
        # the printed (rounded) anchors themselves are within 0.05 points of it
        assert abs(mean_iou(sizes, anchors) - float(iou)) < 0.05


def test_calc_anchors_cli_seeded(capsys, monkeypatch):
    monkeypatch.chdir(MAP)
    args = ["calc-anchors", "coco6.data", "-n", "6", "--width", "416", "--height", "416", "--seed", "2"]
    rc, out1, err = run_cli(args, capsys)
    assert rc == 0, err
    rc, out2, _ = run_cli(args, capsys)
    assert out1 == out2
    assert "counters_per_class = 5, 0, 2, 0, 0, 0, 0, 1, 0" in out1
    line = next(l for l in out1.splitlines() if l.startswith("anchors = "))
    anchors = np.array([float(v) for v in line[len("anchors = "):].split(",")]).reshape(-1, 2)
    iou = out1.split("avg IoU = ")[1].split(" %")[0]
    s, _, _ = label_sizes("coco6.data", 416, 416)
    c, _ = kmeans(s, 6, init=anchors)            # the result is a fixed point too
    assert format_anchors(sort_by_area(c), 416) == line[len("anchors = "):]
    assert f"{mean_iou(s, sort_by_area(c)):2.2f}" == iou


def test_calc_anchors_into_cfg(tmp_path, capsys, monkeypatch):
    from darknet_prn.graph import load_network
    monkeypatch.chdir(MAP)
    out = tmp_path / "nine.cfg"
    rc, _, err = run_cli(["calc-anchors", "coco6.data", "-n", "9", "--width", "416", "--height", "416",
                          "--cfg", "yolov3-tiny.cfg", "-o", out], capsys)
    assert rc == 0, err
    assert "masks laid out for 9 anchors over 2 heads: 5,6,7,8 / 0,1,2,3,4" in err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = load_network(out)
    heads = [g.layers[i] for i in g.heads]
    assert [list(h.p["mask"]) for h in heads] == [[5, 6, 7, 8], [0, 1, 2, 3, 4]]
    assert [g.layers[i - 1].p["filters"] for i in g.heads] == [4 * 85, 5 * 85]
    assert all(len(h.p["anchors"]) == 18 for h in heads)
    # the same number of anchors keeps the cfg's masks and filters
    out6 = tmp_path / "six.cfg"
    rc, _, err = run_cli(["calc-anchors", "coco6.data", "-n", "6", "--width", "416", "--height", "416",
                          "--cfg", "yolov3-tiny.cfg", "-o", out6], capsys)
    assert rc == 0 and "masks" not in err
    orig = (MAP / "yolov3-tiny.cfg").read_text().splitlines()
    new = out6.read_text().splitlines()
    assert len(orig) == len(new) and [a for a, b in zip(orig, new) if a != b] == \
        [l for l in orig if l.replace(" ", "").startswith("anchors=")]


def test_calc_anchors_errors(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(MAP)
    rc, _, err = run_cli(["calc-anchors", "coco6.data", "-n", "40", "--width", "416", "--height", "416"], capsys)
    assert rc == 2 and "28 labelled boxes, fewer than the 40 clusters" in err
    (tmp_path / "t.data").write_text("valid=list.txt\n")
    rc, _, err = run_cli(["calc-anchors", tmp_path / "t.data", "-n", "6", "--width", "416", "--height", "416"], capsys)
    assert rc == 2 and "no train= line" in err


def test_partial_loads_in_opencv_and_ours(real_tiny, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    import torch
    from darknet_prn.model import Darknet
    out, cfg15 = tmp_path / "yolov3-tiny.conv.15", tmp_path / "tiny15.cfg"
    rc, _, err = run_cli(["partial", real_tiny["cfg"], real_tiny["weights"], out, "15", "--cfg-out", cfg15], capsys)
    assert rc == 0, err
    src, got = Path(real_tiny["weights"]).read_bytes(), out.read_bytes()
    assert got[:20] == struct.pack("<iiiQ", 0, 2, 5, 0)                     # Darknet's header, seen reset
    net15 = Darknet.from_cfg(cfg15)
    assert got[20:] == src[20:20 + 4 * net15.graph.weights_floats]         # the arrays of layers 0-14, as they were
    net15.load_weights(out)                                                 # exact fit for the truncated cfg
    assert net15.layers_loaded == 15
    x = np.random.RandomState(0).rand(1, 3, 416, 416).astype(np.float32)
    cvnet = cv2.dnn.readNetFromDarknet(str(cfg15), str(out))
    cvnet.setInput(x)
    ref = cvnet.forward()
    net15.eval()
    with torch.no_grad():
        ours = net15.layer_outputs(torch.from_numpy(x))[-1].numpy()
    assert ref.shape == ours.shape and np.abs(ref - ours).max() < 1e-3 * np.abs(ours).max()
    full = Darknet.from_cfg(real_tiny["cfg"])
    with pytest.warns(UserWarning, match=r"loaded what fits \(layers 0-14 of 24 filled\)"):
        full.load_weights(out, partial=True)
    assert full.layers_loaded == 15


def test_partial_errors(real_tiny, tmp_path, capsys):
    short = tmp_path / "short.weights"
    short.write_bytes(Path(real_tiny["weights"]).read_bytes()[:20 + 4 * 1000])
    rc, _, err = run_cli(["partial", real_tiny["cfg"], short, tmp_path / "o", "5"], capsys)
    assert rc == 2 and "short.weights: holds complete arrays for layers 0--1 only" not in err
    assert "the first 5 layers need them up to layer 4" in err and not (tmp_path / "o").exists()
    rc, _, err = run_cli(["partial", real_tiny["cfg"], tmp_path / "none.weights", tmp_path / "o", "5"], capsys)
    assert rc == 2 and "none.weights" in err and len(err.strip().splitlines()) == 1
