"""`darknet-prn map` / `darknet_prn.evaluate`: Darknet's `detector map` report line for line.

Oracle: ../shared/oracle/map (Darknet's stdout for the default, -points 11, -points 101, -iou_thresh 0.75 and
-thresh 0.5 with the real yolov3-tiny weights on six labelled images).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import cli
from darknet_prn.metrics import MapAccumulator

ROOT = Path(__file__).resolve().parents[1]
MAP = (ROOT / ".." / "shared" / "oracle" / "map").resolve()
VARIANTS = {"default": [], "points11": ["--points", "11"], "points101": ["--points", "101"],
            "iou0.75": ["--iou-thresh", "0.75"], "thresh0.5": ["--thresh", "0.5"]}
KWARGS = {"default": {}, "points11": {"points": 11}, "points101": {"points": 101}, "iou0.75": {"iou_thresh": 0.75},
          "thresh0.5": {"thresh": 0.5}}


def darknet_report(variant):
    """Darknet's report lines: from ` detections_count` to the mAP line (its `\\r` progress removed)."""
    with open(MAP / "runs" / f"map_{variant}.stdout", newline="") as f:
        text = f.read()
    out = []
    for line in text.split("\n"):
        line = line.split("\r")[-1]
        if line.startswith(" detections_count") or out:
            out.append(line)
        if line.startswith(" mean average precision"):
            return out
    raise AssertionError("no mAP line")


@pytest.fixture(scope="module")
def collected(real_tiny):
    import os
    from darknet_prn.evaluation import collect
    cwd = os.getcwd()
    os.chdir(MAP)                   # Darknet resolves the .data paths from the working directory
    try:
        return collect("coco6.data", "yolov3-tiny.cfg", real_tiny["weights"], progress=False)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_report_matches_darknet(collected, variant):
    r = collected.score(**KWARGS[variant])
    assert r.report_lines() == darknet_report(variant)


def test_api_evaluate(real_tiny, monkeypatch):
    import darknet_prn
    monkeypatch.chdir(MAP)
    r = darknet_prn.evaluate("coco6.data", "yolov3-tiny.cfg", real_tiny["weights"], points=101)
    assert r.report_lines() == darknet_report("points101")
    assert abs(r.map - 0.089274) < 5e-7 and r.classes[16].name == "dog" and r.unique_truth_count == 28


def run_cli(args, capsys):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("variant", [v if v in ("default", "iou0.75") else pytest.param(v, marks=pytest.mark.slow)
                                     for v in VARIANTS])
def test_cli_matches_darknet(real_tiny, variant, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(MAP)
    plot = ["--plot", tmp_path / "plots"] if variant == "default" else []
    rc, out, err = run_cli(["map", "coco6.data", "yolov3-tiny.cfg", real_tiny["weights"], *VARIANTS[variant],
                            "--json", tmp_path / "m.json", *plot], capsys)
    assert rc == 0, err
    assert out.splitlines() == darknet_report(variant)
    if plot:
        for name in ("pr_curves.png", "ap_per_class.png", "confusion_matrix.png"):
            data = (tmp_path / "plots" / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000, name
    j = json.loads((tmp_path / "m.json").read_text())
    assert j["unique_truth_count"] == 28 and len(j["classes"]) == 80 and j["detections_count"] == 174


def test_matching_rules():
    """Strict `>` IoU threshold, the highest-IoU truth, first hit TP and later ones FP, mAP over all classes."""
    acc = MapAccumulator(classes=3, iou_thresh=0.5, thresh=0.25)
    truths = np.array([[0, 0.5, 0.5, 0.2, 0.2], [0, 0.52, 0.5, 0.2, 0.2]], np.float32)
    boxes = np.array([[0.52, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]],
                     np.float32)
    probs = np.zeros((4, 3), np.float32)
    probs[:, 0] = [0.9, 0.8, 0.7, 0.3]
    probs[1, 1] = 0.6                          # a second class of the same box: its own (false) detection
    acc.add(boxes, probs, truths)
    r = acc.result(0)
    c0 = r.classes[0]
    # det 0 -> truth 1 (IoU 1), det 1 -> truth 0, det 2 -> best truth taken -> FP, det 3 -> no truth -> FP
    assert (c0.tp, c0.fp, c0.truths) == (2, 2, 2)
    assert c0.ap == pytest.approx(1.0) and r.classes[1].ap == 0.0 and r.map == pytest.approx(1.0 / 3)
    assert (r.tp, r.fp, r.fn) == (2, 3, 0)
    # a box whose IoU with its truth is exactly the threshold is not a match
    acc = MapAccumulator(classes=1, iou_thresh=0.5)
    acc.add(np.array([[0.5, 0.375, 0.5, 0.25]], np.float32), np.array([[0.9]], np.float32),
            np.array([[0, 0.5, 0.5, 0.5, 0.5]], np.float32))            # IoU exactly 0.5 in float32
    assert acc.result(0).tp == 0


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line, status 2


def _copy_set(tmp_path):
    d = tmp_path / "set"
    shutil.copytree(MAP / "data", d / "data")
    shutil.copy(MAP / "coco.names", d)
    shutil.copy(MAP / "list.txt", d)
    shutil.copy(MAP / "yolov3-tiny.cfg", d)
    (d / "coco6.data").write_text("classes=80\nvalid=list.txt\nnames=coco.names\n")
    return d


def test_bad_input_messages(real_tiny, tmp_path, capsys, monkeypatch):
    d = _copy_set(tmp_path)
    monkeypatch.chdir(d)
    w = real_tiny["weights"]
    (d / "novalid.data").write_text("classes=80\nnames=coco.names\n")
    rc, _, err = run_cli(["map", "novalid.data", "yolov3-tiny.cfg", w], capsys)
    assert rc == 2 and "novalid.data: no valid= line" in err and len(err.strip().splitlines()) == 1
    (d / "three.names").write_text("a\nb\nc\n")
    (d / "names3.data").write_text("valid=list.txt\nnames=three.names\n")
    rc, _, err = run_cli(["map", "names3.data", "yolov3-tiny.cfg", w], capsys)
    assert rc == 2 and "three.names: has 3 class names but the cfg's detection layers have classes=80" in err
    (d / "data" / "kite.txt").write_text("33 0.5 0.5 0.2 0.2\n80 0.5 0.5 0.2 0.2\n")
    rc, _, err = run_cli(["map", "coco6.data", "yolov3-tiny.cfg", w], capsys)
    assert rc == 2 and "data/kite.txt:2: class id 80 out of range" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(["map", "coco6.data", "yolov3-tiny.cfg", w, "--points", "1"], capsys)
    assert rc == 2 and "--points 1" in err


def test_missing_images_and_labels_are_counted(real_tiny, tmp_path, capsys, monkeypatch):
    d = _copy_set(tmp_path)
    monkeypatch.chdir(d)
    (d / "data" / "eagle.jpg").unlink()
    (d / "data" / "kite.txt").unlink()
    rc, out, err = run_cli(["map", "coco6.data", "yolov3-tiny.cfg", real_tiny["weights"]], capsys)
    assert rc == 0, err
    warn = [l for l in err.splitlines() if "warning" in l]
    assert len(warn) == 2
    assert "1 of 6 images could not be read" in warn[0] and "eagle.jpg" in warn[0]
    assert "1 of 6 images have no label file" in warn[1] and "kite.txt" in warn[1]
    # the eagle's labels stay in the truth count (Darknet's blank image), the kite's are gone
    kite = len((MAP / "data" / "kite.txt").read_text().strip().splitlines())
    assert f"unique_truth_count = {28 - kite}  " in out


def test_confusion_matrix_counts(collected):
    from darknet_prn.metrics import confusion_matrix
    C = collected.classes
    m = confusion_matrix([(im.boxes, im.dense(C), im.truths) for im in collected.images], C, 0.25, 0.5)
    r = collected.score()
    assert m[:C].sum() == r.unique_truth_count == 28            # every label once: matched or missed
    assert m[:, :C].sum() == r.tp + r.fp == 24                  # every detection above 0.25 once
    assert m[16, 16] == 3 and m[17, 17] == 5                    # dogs, horses found


def test_difficult_detections_leave_the_ranking():
    """Darknet's `difficult=`: a detection without a truth that matches a difficult label is dropped from the AP
    ranking (detections_count) -- but still counted as FP at --thresh, as Darknet counts it."""
    acc = MapAccumulator(classes=1)
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]], np.float32)
    acc.add(boxes, np.array([[0.9], [0.8]], np.float32), np.array([[0, 0.2, 0.2, 0.1, 0.1]], np.float32),
            difficult=np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32))
    r = acc.result(0)
    assert r.detections_count == 1 and r.classes[0].ap == 1.0 and (r.tp, r.fp) == (1, 1)
