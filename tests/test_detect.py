"""`darknet-prn detect` and the Detector API.

* Darknet parity: the real COCO yolov3-tiny reproduces Darknet's printed lines for the shared images
  (`../shared/data/expected/`) in resize and letterbox modes, through the API and the CLI, with confidences
  within 1 point and boxes within 2 px of Darknet's full-precision values.
* End-to-end paths (JSON, COCO, annotated images, directories, globs, video, errors) on a tiny random network.
"""
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import cli
from darknet_prn.detect import Detector, class_color, discover_inputs, read_names, resolve_names
from darknet_prn.errors import DarknetError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT / ".." / "shared" / "data"
EXPECTED = SHARED_DATA / "expected"
IMAGES = ("dog", "person", "horses")
MODES = ("resize", "letterbox")


# ---------------------------------------------------------------------------------------------------------------
# helpers


def expected_lines(image, mode):
    """Darknet's detection lines (after the `Predicted in` line) from IMAGE.MODE.stdout."""
    lines = (EXPECTED / f"{image}.{mode}.stdout").read_text().splitlines()
    i = next(k for k, l in enumerate(lines) if "Predicted in" in l)
    return [l for l in lines[i + 1:] if l.strip()]


def expected_rows(image, mode):
    with open(EXPECTED / f"{image}.{mode}.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def image_size(image):
    with open(EXPECTED / "images.tsv", newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if r["image"] == f"{image}.jpg":
                return int(r["width"]), int(r["height"])
    raise KeyError(image)


def compare_with_tsv(dets, image, mode):
    """Max |confidence diff| (points) and max |box diff| (px, over left/top/width/height) against the TSV;
    every TSV row must have a detection of the same class."""
    rows = expected_rows(image, mode)
    im_w, im_h = image_size(image)
    assert len(dets) == len(rows), (image, mode, len(dets), len(rows))
    max_conf = max_box = 0.0
    for r in rows:
        x, y, w, h = (float(r[k]) for k in "xywh")
        want = np.array([(x - w / 2) * im_w, (y - h / 2) * im_h, w * im_w, h * im_h])
        cands = [d for d in dets if d["class_id"] == int(r["class"])]
        assert cands, (image, mode, r)
        best = min(cands, key=lambda d: np.abs(np.array(d["bbox"]) - want).max())
        max_box = max(max_box, float(np.abs(np.array(best["bbox"]) - want).max()))
        max_conf = max(max_conf, abs(best["confidence"] - float(r["prob"])) * 100)
        assert best["name"] == r["name"]
    return max_conf, max_box


def run_cli(argv, capsys):
    rc = cli.main(["detect"] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def detection_lines(stdout):
    """stdout without the (timing) `Predicted in` lines, grouped per image."""
    groups = {}
    cur = None
    for line in stdout.splitlines():
        if ": Predicted in " in line:
            cur = line.split(": Predicted in ")[0]
            groups[cur] = []
        elif line.strip():
            groups[cur].append(line)
    return groups


# ---------------------------------------------------------------------------------------------------------------
# Darknet parity with the real yolov3-tiny


@pytest.fixture(scope="module")
def shared_images():
    paths = [SHARED_DATA / f"{i}.jpg" for i in IMAGES]
    if not all(p.exists() for p in paths) or not EXPECTED.exists():
        pytest.skip(f"shared data missing under {SHARED_DATA}")
    return paths


@pytest.fixture(scope="module")
def real_detector(real_tiny):
    return Detector(real_tiny["cfg"], real_tiny["weights"])


@pytest.fixture(scope="module")
def api_results(real_detector, shared_images):
    """{mode: [detections per image]} from one batched forward pass per mode."""
    out = {}
    for mode in MODES:
        real_detector.letterbox = mode == "letterbox"
        out[mode] = real_detector.detect([str(p) for p in shared_images], batch_size=3)
    real_detector.letterbox = False
    return out


@pytest.mark.parametrize("backend", ["exact", "onnxruntime"])
def test_backends_reproduce_darknet(real_tiny, shared_images, backend):
    pytest.importorskip(backend if backend != "exact" else "torch")
    det = Detector(real_tiny["cfg"], real_tiny["weights"], backend=backend, threads=2)
    for image, path in zip(IMAGES, shared_images):
        dets = det.detect(str(path))
        assert [d["name"] for d in dets] == [ln.split(":")[0] for ln in expected_lines(image, "resize")]
        c, b = compare_with_tsv(dets, image, "resize")
        assert c <= 1.0 and b <= 2.0, (backend, image, c, b)


def test_real_model_defaults(real_detector):
    assert real_detector.thresh == 0.25 and real_detector.nms == 0.45 and not real_detector.letterbox
    assert real_detector.names[16] == "dog" and len(real_detector.names) == 80      # coco.names beside weights
    assert real_detector.nms_kind == "default"


@pytest.mark.parametrize("mode", MODES)
def test_api_reproduces_darknet(api_results, real_detector, mode):
    from darknet_prn import postprocess as post
    worst_conf = worst_box = 0.0
    for image, dets in zip(IMAGES, api_results[mode]):
        # same lines, same order as Darknet's stdout
        recs = [(d["name"], d["confidence"], d["bbox"]) for d in dets]
        lines = [post.format_line(n, np.float32(c), tuple(post._c_round(np.array(b, np.float32)).tolist()))
                 for n, c, b in recs]
        assert lines == expected_lines(image, mode), (image, mode)
        c, b = compare_with_tsv(dets, image, mode)
        worst_conf, worst_box = max(worst_conf, c), max(worst_box, b)
        for d in dets:
            assert set(d) == {"class_id", "name", "confidence", "bbox", "relative"}
            assert all(isinstance(v, float) for v in d["bbox"] + d["relative"])
    print(f"\n{mode}: max confidence diff {worst_conf:.5f} points, max box diff {worst_box:.5f} px")
    assert worst_conf <= 1.0 and worst_box <= 2.0


@pytest.mark.parametrize("mode", MODES)
def test_cli_reproduces_darknet(real_tiny, shared_images, tmp_path, capsys, mode):
    argv = [real_tiny["cfg"], real_tiny["weights"], *shared_images, "--batch-size", "3",
            "--json", tmp_path / "det.json", "--out", tmp_path / "runs"]
    if mode == "letterbox":
        argv.append("--letterbox")
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    groups = detection_lines(out)
    assert list(groups) == [str(p) for p in shared_images]
    for image, path in zip(IMAGES, shared_images):
        assert groups[str(path)] == expected_lines(image, mode), (image, mode)
    data = json.loads((tmp_path / "det.json").read_text())
    for image, entry in zip(IMAGES, data):
        assert (entry["width"], entry["height"]) == image_size(image)
        compare_with_tsv(entry["detections"], image, mode)
    for p in shared_images:
        assert (tmp_path / "runs" / p.name).stat().st_size > 1000


# ---------------------------------------------------------------------------------------------------------------
# a tiny random network for the end-to-end paths

TINY_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


def write_tiny(d):
    """``tiny.cfg`` + seeded random ``tiny.weights`` in folder ``d``."""
    import torch
    from darknet_prn import Darknet
    (d / "tiny.cfg").write_text(TINY_CFG)
    torch.manual_seed(0)
    Darknet.from_cfg(d / "tiny.cfg").save_weights(d / "tiny.weights")
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = write_tiny(tmp_path_factory.mktemp("tiny"))
    return {"cfg": d / "tiny.cfg", "weights": d / "tiny.weights", "dir": d}


@pytest.fixture(scope="module")
def sample_jpg():
    p = ROOT / "tests" / "data" / "dog.jpg"
    return p if p.exists() else SHARED_DATA / "dog.jpg"


def make_tree(root, sample_jpg):
    """root/a.jpg, root/sub/b.png, root/sub/deeper/c.jpeg, root/notes.txt"""
    import cv2
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(sample_jpg, root / "a.jpg")
    img = cv2.imread(str(sample_jpg))
    cv2.imwrite(str(root / "sub" / "b.png"), cv2.resize(img, (80, 60)))
    cv2.imwrite(str(root / "sub" / "deeper" / "c.jpeg"), cv2.resize(img, (50, 70)))
    (root / "notes.txt").write_text("not an image")


def test_api_inputs_path_bgr_rgb_and_batch(tiny, sample_jpg):
    from darknet_prn.preprocess import read_image
    det = Detector(tiny["cfg"], tiny["weights"], thresh=0.3)
    rgb = read_image(sample_jpg)
    by_path = det.detect(str(sample_jpg))
    assert by_path and all(d["name"] in ("0", "1") for d in by_path)     # numeric ids: 2 classes, no names
    assert det.detect(rgb[:, :, ::-1].copy()) == by_path                 # default: BGR arrays (OpenCV)
    assert det.detect(rgb, rgb=True) == by_path
    assert det(Path(sample_jpg)) == by_path
    batch = det.detect([str(sample_jpg), rgb[:, :, ::-1].copy()])
    assert isinstance(batch, list) and len(batch) == 2 and batch[0] == batch[1]
    # a batched forward pass may differ from a single one in the last float bits
    assert [d["class_id"] for d in batch[0]] == [d["class_id"] for d in by_path]
    np.testing.assert_allclose([d["bbox"] for d in batch[0]], [d["bbox"] for d in by_path], rtol=1e-4, atol=1e-3)
    annotated = det.annotate(rgb[:, :, ::-1].copy(), by_path)
    assert annotated.shape == rgb.shape and not np.array_equal(annotated, rgb[:, :, ::-1])
    with pytest.raises(DarknetError, match="nope.jpg"):
        det.detect("nope.jpg")
    with pytest.raises(DarknetError):
        det.detect(np.zeros((4, 4), np.float32))


def test_api_thresh_nms_letterbox_options(tiny, sample_jpg):
    loose = Detector(tiny["cfg"], tiny["weights"], thresh=0.2, nms=None).detect(str(sample_jpg))
    strict = Detector(tiny["cfg"], tiny["weights"], thresh=0.2, nms=0.3).detect(str(sample_jpg))
    assert len(strict) < len(loose)
    assert all(d["confidence"] > 0.2 for d in loose)
    lb = Detector(tiny["cfg"], tiny["weights"], letterbox=True)
    assert lb.letterbox and lb.detect(str(sample_jpg)) != Detector(tiny["cfg"], tiny["weights"]).detect(
        str(sample_jpg))
    # [net] letter_box=1 turns it on by default; letterbox=False overrides the cfg
    lb_cfg = tiny["dir"] / "tiny_lb.cfg"
    lb_cfg.write_text(TINY_CFG.replace("channels=3", "channels=3\nletter_box=1"))
    assert Detector(lb_cfg, tiny["weights"]).letterbox
    assert not Detector(lb_cfg, tiny["weights"], letterbox=False).letterbox


def test_cli_directory_glob_json_coco_images_progress(tiny, sample_jpg, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make_tree(data, sample_jpg)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(sample_jpg, other / "x1.jpg")
    shutil.copy(sample_jpg, other / "397133.jpg")
    out = tmp_path / "runs"
    rc, stdout, stderr = run_cli([tiny["cfg"], tiny["weights"], data, str(other / "*.jpg"), "--thresh", "0.3",
                                  "--json", tmp_path / "r.json", "--coco", tmp_path / "c.json", "--out", out,
                                  "--batch-size", "2"], capsys)
    assert rc == 0, stderr
    want = [str(data / "a.jpg"), str(data / "sub" / "b.png"), str(data / "sub" / "deeper" / "c.jpeg"),
            str(other / "397133.jpg"), str(other / "x1.jpg")]
    assert list(detection_lines(stdout)) == want
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["image"] for r in rows] == want
    assert [(r["width"], r["height"]) for r in rows[:3]] == [(768, 576), (80, 60), (50, 70)]
    for r in rows:
        assert set(r) == {"image", "width", "height", "detections"}
        for d in r["detections"]:
            assert set(d) == {"class_id", "name", "confidence", "bbox", "relative"}
            assert len(d["bbox"]) == 4 and len(d["relative"]) == 4 and 0.3 < d["confidence"] <= 1
    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco) == sum(len(r["detections"]) for r in rows)
    assert {c["image_id"] for c in coco} >= {397133, "a"}
    for c in coco:
        assert set(c) == {"image_id", "category_id", "bbox", "score"}
        x, y, w, h = c["bbox"]
        assert x >= 0 and y >= 0 and w >= 0 and h >= 0
    # annotated images keep the folder layout under --out
    for rel in ("a.jpg", "sub/b.png", "sub/deeper/c.jpeg", "397133.jpg", "x1.jpg"):
        assert (out / rel).is_file(), rel
    assert "\r" not in stderr and "it/s" not in stderr and "img/s" not in stderr   # no progress bar off a terminal
    assert stderr.strip().splitlines()[-1] == (f"Results saved to {out} (5 images); JSON {tmp_path / 'r.json'}; "
                                               f"COCO {tmp_path / 'c.json'}")


def test_cli_video(tiny, sample_jpg, tmp_path, capsys):
    import cv2
    img = cv2.resize(cv2.imread(str(sample_jpg)), (96, 72))
    clip = tmp_path / "clip.mp4"
    wr = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 72))
    if not wr.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v video")
    for k in range(3):
        wr.write(np.roll(img, 8 * k, axis=1))
    wr.release()
    out = tmp_path / "runs"
    rc, stdout, stderr = run_cli([tiny["cfg"], tiny["weights"], clip, "--json", tmp_path / "v.json",
                                  "--out", out, "--batch-size", "2"], capsys)
    assert rc == 0, stderr
    assert list(detection_lines(stdout)) == [f"{clip}#{k}" for k in range(3)]
    rows = json.loads((tmp_path / "v.json").read_text())
    assert [(r["image"], r["frame"]) for r in rows] == [(str(clip), k) for k in range(3)]
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 3
    assert stderr.strip().splitlines()[-1] == f"Results saved to {out} (1 video); JSON {tmp_path / 'v.json'}"


def test_cli_bad_inputs_reported_others_processed(tiny, sample_jpg, tmp_path, capsys):
    good = tmp_path / "good.jpg"
    shutil.copy(sample_jpg, good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0garbage" + bytes(range(256)))
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("x")
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    missing = tmp_path / "missing.jpg"
    rc, stdout, stderr = run_cli([tiny["cfg"], tiny["weights"], missing, corrupt, good, empty_dir, bad_video,
                                  str(tmp_path / "*.nothing"), "--no-save"], capsys)
    assert rc == 1
    assert list(detection_lines(stdout)) == [str(good)]
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("warning: no class names for the model's 2 classes, labels are class numbers")
    errs = lines[1:]
    assert len(errs) == 5, stderr
    assert all(e.startswith("darknet-prn detect: error: ") for e in errs)
    for name in ("missing.jpg", "corrupt.jpg", "empty_dir", "broken.mp4", "*.nothing"):
        assert sum(name in e for e in errs) == 1, (name, errs)
    assert "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()


def test_cli_no_save_and_default_out(tiny, sample_jpg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(sample_jpg, tmp_path / "img.jpg")
    rc, _, err = run_cli([tiny["cfg"], tiny["weights"], "img.jpg", "--no-save"], capsys)
    assert rc == 0, err
    assert not (tmp_path / "runs").exists() and "Results saved" not in err
    # runs/detect/exp, then exp2, exp3 (never over an earlier run); --exist-ok reuses the folder
    for k, name in enumerate(("exp", "exp2", "exp3")):
        rc, _, err = run_cli([tiny["cfg"], tiny["weights"], "img.jpg"], capsys)
        assert rc == 0, err
        assert (tmp_path / "runs" / "detect" / name / "img.jpg").is_file()
        assert err.strip().splitlines()[-1] == f"Results saved to {os.path.join('runs', 'detect', name)} (1 image)"
    rc, _, err = run_cli([tiny["cfg"], tiny["weights"], "img.jpg", "--out", "runs/detect/exp2", "--exist-ok"], capsys)
    assert rc == 0 and f"Results saved to {os.path.join('runs', 'detect', 'exp2')} (1 image)" in err
    assert sorted(os.listdir(tmp_path / "runs" / "detect")) == ["exp", "exp2", "exp3"]


def test_cli_json_to_stdout(tiny, sample_jpg, capsys):
    rc, stdout, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--json", "-", "--no-save"], capsys)
    assert rc == 0, err
    rows = json.loads(stdout)                                # nothing but JSON on stdout
    assert rows[0]["image"] == str(sample_jpg) and rows[0]["width"] == 768


def test_cli_names_and_data(tiny, sample_jpg, tmp_path, capsys):
    (tmp_path / "two.names").write_text("cat\ndog\n\n")
    (tmp_path / "three.names").write_text("a\nb\nc\n")
    rc, stdout, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--names", tmp_path / "two.names",
                               "--json", "-", "--no-save", "--thresh", "0.3"], capsys)
    assert rc == 0, err
    names = {d["name"] for d in json.loads(stdout)[0]["detections"]}
    assert names and names <= {"cat", "dog"}
    rc, _, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--names", tmp_path / "three.names"], capsys)
    assert rc == 2 and "three.names" in err and "3 class names" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "my.data").write_text("classes = 2\nnames = two.names\n")
    shutil.move(str(tmp_path / "two.names"), tmp_path / "sub" / "two.names")
    rc, stdout, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--data", tmp_path / "sub" / "my.data",
                               "--json", "-", "--no-save", "--thresh", "0.3"], capsys)
    assert rc == 0, err
    assert {d["name"] for d in json.loads(stdout)[0]["detections"]} <= {"cat", "dog"}
    rc, _, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--names", tmp_path / "none.names"], capsys)
    assert rc == 2 and "none.names" in err


def test_cli_fatal_errors_one_line(tiny, sample_jpg, tmp_path, capsys):
    rc, _, err = run_cli([tmp_path / "no.cfg", tiny["weights"], sample_jpg], capsys)
    assert rc == 2 and "no.cfg" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc, _, err = run_cli([tiny["cfg"], tmp_path / "no.weights", sample_jpg], capsys)
    assert rc == 2 and "no.weights" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--batch-size", "0"], capsys)
    assert rc == 2
    import torch
    if not torch.cuda.is_available():
        rc, _, err = run_cli([tiny["cfg"], tiny["weights"], sample_jpg, "--device", "cuda"], capsys)
        assert rc == 2 and "cuda" in err.lower()


def test_default_names(tmp_path):
    w = tmp_path / "m.weights"
    w.write_bytes(b"")
    assert resolve_names(80, weights=w)[0] == [str(i) for i in range(80)]     # no coco.names beside it
    (tmp_path / "coco.names").write_text("\n".join(f"c{i}" for i in range(80)) + "\n")
    names, src = resolve_names(80, weights=w)
    assert names[3] == "c3" and src.endswith("coco.names")
    assert resolve_names(2, weights=w)[0] == ["0", "1"]                          # only for 80 classes
    assert resolve_names(2, names=["x", "y"])[0] == ["x", "y"]
    with pytest.raises(DarknetError):
        resolve_names(3, names=["x", "y"])
    assert read_names(tmp_path / "coco.names")[79] == "c79"


def test_discover_inputs(tmp_path, sample_jpg):
    make_tree(tmp_path / "d", sample_jpg)
    (tmp_path / "v.avi").write_bytes(b"x")
    items = discover_inputs([str(tmp_path / "d"), str(tmp_path / "v.avi"), str(tmp_path / "nope.png"),
                             str(tmp_path / "d" / "**" / "*.jpeg")])
    kinds = [(i.kind, os.path.basename(i.path)) for i in items]
    assert kinds == [("image", "a.jpg"), ("image", "b.png"), ("image", "c.jpeg"), ("video", "v.avi"),
                     ("error", "nope.png"), ("image", "c.jpeg")]
    assert items[1].rel == os.path.join("sub", "b.png")


def test_colors():
    colors = {class_color(c, 80) for c in range(80)}
    assert len(colors) > 40 and all(0 <= v <= 255 for col in colors for v in col)
