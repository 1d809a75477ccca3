"""`detect` as users drive it: option checks before inference, outputs (run folders, label files, Darknet's JSON),
class filter and max-det, webcam/stream inputs (a fake capture), quiet/progress, the names hint, label drawing,
`export --partial`, thread settings, torchrun sharding."""
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from darknet_prn import cli
from darknet_prn.detect import draw_detections, place_label
from darknet_prn.outputs import darknet_json_text, yolo_label_text
from test_detect import write_tiny

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "dog.jpg"

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = write_tiny(tmp_path_factory.mktemp("tiny"))
    (d / "two.names").write_text("cat\ndog\n")
    return d


def run_cli(argv, capsys, cmd="detect"):
    rc = cli.main([cmd] + [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tiny_args(tiny, *more):
    return [tiny / "tiny.cfg", tiny / "tiny.weights", *more]


# ---------------------------------------------------------------------------------------------------------------
# options checked before inference: one line naming the option, status 2, nothing written


@pytest.mark.parametrize("opts, want", [
    (["--thresh", "nan"], "--thresh nan: must be a number between 0 and 1"),
    (["--thresh", "1.5"], "--thresh 1.5: must be a number between 0 and 1"),
    (["--thresh", "-0.1"], "--thresh -0.1: must be"),
    (["--nms", "nan"], "--nms nan: must be"),
    (["--hier", "2"], "--hier 2.0: must be"),
    (["--threads", "-1"], "--threads -1: must be at least 1"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--max-det", "0"], "--max-det 0: must be at least 1"),
    (["--device", "foo"], "--device foo: not a device"),
    (["--json", ""], "--json: empty file name"),
    (["--json", "{tmp}"], "--json: {tmp} is a directory"),
    (["--coco", "{file}/c.json"], "--coco: {file}/c.json: {file} is a file, not a directory"),
    (["--darknet-json", "{tmp}"], "--darknet-json: {tmp} is a directory"),
    (["--out", "{file}"], "--out: {file} is a file"),
    (["--classes", "0", "7"], "--classes 7: the model has 2 classes (0..1)"),
    (["--save-conf"], "--save-conf needs --save-txt"),
    (["--json", "-", "--coco", "-"], "only one of --json, --coco, --darknet-json can be '-'"),
])
def test_bad_options_fail_before_inference(tiny, tmp_path, capsys, monkeypatch, opts, want):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "a_file"
    f.write_text("x")
    fill = {"tmp": str(tmp_path), "file": str(f)}
    rc, out, err = run_cli(tiny_args(tiny, SAMPLE, *[o.format(**fill) for o in opts]), capsys)
    assert rc == 2, err
    assert err.strip().splitlines() == [f"darknet-prn detect: error: {want.format(**fill)}"] or \
        (err.count("\n") == 1 and want.format(**fill) in err), err
    assert out == "" and not (tmp_path / "runs").exists()


def test_unwritable_out_named(tiny, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc, _, err = run_cli(tiny_args(tiny, SAMPLE, "--out", ro / "x"), capsys)
    assert rc == 2 and "--out:" in err and "no permission" in err


# ---------------------------------------------------------------------------------------------------------------
# outputs


def test_save_txt_conf_classes_max_det(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE, data / "a.jpg")
    shutil.copy(SAMPLE, data / "sub" / "b.jpg")
    base = ["--thresh", "0.2", "--names", tiny / "two.names", "--json", tmp_path / "all.json", "--no-save"]
    rc, _, err = run_cli(tiny_args(tiny, data, *base), capsys)
    assert rc == 0, err
    every = json.loads((tmp_path / "all.json").read_text())
    assert {d["class_id"] for d in every[0]["detections"]} == {0, 1}          # both classes present unfiltered
    out = tmp_path / "run"
    rc, _, err = run_cli(tiny_args(tiny, data, "--thresh", "0.2", "--names", tiny / "two.names", "--json",
                                   tmp_path / "f.json", "--out", out, "--save-txt", "--save-conf", "--classes", "1",
                                   "--max-det", "3"), capsys)
    assert rc == 0, err
    rows = json.loads((tmp_path / "f.json").read_text())
    for full, got in zip(every, rows):
        ones = [d for d in full["detections"] if d["class_id"] == 1]
        top = sorted(ones, key=lambda d: -d["confidence"])[:3]
        assert got["detections"] == [d for d in ones if d in top]           # filtered, top 3, order kept
    for rel, row in (("a", rows[0]), ("sub/b", rows[1])):
        lines = (out / "labels" / f"{rel}.txt").read_text().splitlines()
        assert len(lines) == len(row["detections"]) == 3
        for line, d in zip(lines, row["detections"]):
            c, x, y, w, h, conf = line.split()
            assert c == "1" and abs(float(conf) - d["confidence"]) < 1e-5
            left, top_, bw, bh = d["bbox"]
            x0, y0 = max(left, 0), max(top_, 0)
            x1, y1 = min(left + bw, row["width"]), min(top_ + bh, row["height"])
            np.testing.assert_allclose([float(x), float(y), float(w), float(h)],
                                       [(x0 + x1) / 2 / row["width"], (y0 + y1) / 2 / row["height"],
                                        (x1 - x0) / row["width"], (y1 - y0) / row["height"]], atol=2e-6)
    assert (out / "a.jpg").is_file() and (out / "sub" / "b.jpg").is_file()
    assert err.strip().splitlines()[-1] == f"Results saved to {out} (2 images, 2 labels); JSON {tmp_path / 'f.json'}"


def test_yolo_label_text_format():
    dets = [{"class_id": 3, "confidence": 0.5, "bbox": [-10.0, 20.0, 60.0, 40.0]}]
    assert yolo_label_text(dets, 100, 200) == "3 0.25 0.2 0.5 0.2\n"
    assert yolo_label_text(dets, 100, 200, conf=True) == "3 0.25 0.2 0.5 0.2 0.5\n"


def test_darknet_json_format_is_darknets():
    # what test_detector + detection_to_json (AlexeyAB src/detector.c, src/network.c) write for two images
    want = ('[\n{\n "frame_id":1, \n "filename":"data/dog.jpg", \n "objects": [ \n'
            '  {"class_id":16, "name":"dog", "relative_coordinates":{"center_x":0.330000, "center_y":0.625000, '
            '"width":0.335938, "height":0.515625}, "confidence":0.806600}, \n'
            '  {"class_id":1, "name":"bicycle", "relative_coordinates":{"center_x":0.500000, "center_y":0.500000, '
            '"width":0.250000, "height":0.125000}, "confidence":0.380000}\n ] \n}, \n'
            '{\n "frame_id":2, \n "filename":"data/empty.jpg", \n "objects": [ \n\n ] \n}\n]')
    got = darknet_json_text([
        ("data/dog.jpg", [[16, "dog", [0.33, 0.625, 0.3359375, 0.515625], 0.8066],
                          [1, "bicycle", [0.5, 0.5, 0.25, 0.125], 0.38]]),
        ("data/empty.jpg", [])])
    assert got == want
    assert json.loads(got)[0]["objects"][0]["relative_coordinates"]["width"] == 0.335938


def test_cli_darknet_json_matches_detections(tiny, tmp_path, capsys):
    rc, _, err = run_cli(tiny_args(tiny, SAMPLE, SAMPLE, "--thresh", "0.2", "--names", tiny / "two.names",
                                   "--json", tmp_path / "r.json", "--darknet-json", tmp_path / "d.json",
                                   "--no-save"), capsys)
    assert rc == 0, err
    ours = json.loads((tmp_path / "r.json").read_text())
    dk = json.loads((tmp_path / "d.json").read_text())
    assert [e["frame_id"] for e in dk] == [1, 2] and [e["filename"] for e in dk] == [str(SAMPLE)] * 2
    for o, e in zip(ours, dk):
        want = sorted((d["class_id"], round(d["confidence"], 6), *(round(v, 6) for v in d["relative"]))
                      for d in o["detections"])
        got = sorted((x["class_id"], x["confidence"], *x["relative_coordinates"].values()) for x in e["objects"])
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1.5e-6)
        assert {x["name"] for x in e["objects"]} <= {"cat", "dog"}


def test_quiet_and_names_hint(tiny, tmp_path, capsys):
    rc, out, err = run_cli(tiny_args(tiny, SAMPLE, "--out", tmp_path / "o"), capsys)
    assert rc == 0 and "Predicted in" in out
    assert err.splitlines()[0] == ("warning: no class names for the model's 2 classes, labels are class numbers "
                                   "(give --names FILE or --data FILE)")
    rc, out, err = run_cli(tiny_args(tiny, SAMPLE, "--out", tmp_path / "q", "-q"), capsys)
    assert rc == 0 and out == ""
    assert err == f"Results saved to {tmp_path / 'q'} (1 image)\n"                  # the one line that stays
    rc, out, err = run_cli(tiny_args(tiny, SAMPLE, "--names", tiny / "two.names", "--no-save"), capsys)
    assert rc == 0 and err == ""


def test_progress_bar_only_on_a_terminal(tiny, tmp_path, capsys, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    for k in range(3):
        shutil.copy(SAMPLE, d / f"{k}.jpg")

    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["detect", *map(str, tiny_args(tiny, d, "--no-save", "--names", tiny / "two.names"))]) == 0
    text = tty.getvalue()
    assert "\r" in text and "/3 [" in text and "img/s" in text      # tqdm's bar (how far it drew depends on timing)
    monkeypatch.undo()
    tty2 = Tty()
    monkeypatch.setattr(sys, "stderr", tty2)
    assert cli.main(["detect", *map(str, tiny_args(tiny, d, "--no-save", "-q", "--names", tiny / "two.names"))]) == 0
    assert tty2.getvalue() == ""


# ---------------------------------------------------------------------------------------------------------------
# webcams, streams, URLs


class FakeCapture:
    """cv2.VideoCapture stand-in: ``frames`` frames of the sample image, then end of stream."""
    opened = []
    frames = 3
    fail_open = False
    interrupt_after = None

    def __init__(self, source):
        import cv2
        FakeCapture.opened.append(source)
        self.img = cv2.resize(cv2.imread(str(SAMPLE)), (96, 72))
        self.n = 0

    def isOpened(self):
        return not FakeCapture.fail_open

    def get(self, prop):
        return 0.0                 # streams report no frame count and often no fps

    def read(self):
        if FakeCapture.interrupt_after is not None and self.n >= FakeCapture.interrupt_after:
            raise KeyboardInterrupt
        if self.n >= FakeCapture.frames:
            return False, None
        self.n += 1
        return True, self.img.copy()

    def release(self):
        pass


@pytest.fixture
def fake_capture(monkeypatch):
    import cv2
    FakeCapture.opened, FakeCapture.fail_open, FakeCapture.interrupt_after = [], False, None
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    return FakeCapture


def test_webcam_and_stream_inputs(tiny, tmp_path, capsys, fake_capture, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(tiny_args(tiny, "0", "rtsp://cam.local:8554/live", "--json", "r.json", "--names",
                                     tiny / "two.names"), capsys)
    assert rc == 0, err
    assert fake_capture.opened == [0, "rtsp://cam.local:8554/live"]           # index as int, URL as given
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(r["image"], r["frame"]) for r in rows] == [("0", k) for k in range(3)] + \
        [("rtsp://cam.local:8554/live", k) for k in range(3)]
    run = tmp_path / "runs" / "detect" / "exp"
    assert sorted(os.listdir(run)) == ["rtsp_cam.local_8554_live.mp4", "webcam0.mp4"]
    assert "Results saved to" in err and "(2 videos)" in err


def test_stream_errors_and_interrupt(tiny, tmp_path, capsys, fake_capture):
    fake_capture.fail_open = True
    rc, _, err = run_cli(tiny_args(tiny, "1", "--no-save", "--names", tiny / "two.names"), capsys)
    assert rc == 1 and err.strip() == "darknet-prn detect: error: 1: cannot open the stream or camera"
    fake_capture.fail_open, fake_capture.interrupt_after = False, 2
    rc, _, err = run_cli(tiny_args(tiny, "0", "--no-save", "--json", tmp_path / "r.json", "--names",
                                   tiny / "two.names"), capsys)
    assert rc == 130 and "interrupted" in err                                  # Ctrl-C ends a webcam run ...
    assert [r["frame"] for r in json.loads((tmp_path / "r.json").read_text())] == [0, 1]   # ... keeping its rows


def test_image_url_fails_clearly(tiny, capsys):
    rc, out, err = run_cli(tiny_args(tiny, "https://example.com/img/dog.jpg?x=1", SAMPLE, "--no-save", "--names",
                                     tiny / "two.names"), capsys)
    assert rc == 1 and "Predicted in" in out                                    # the other input still ran
    assert err.strip() == ("darknet-prn detect: error: https://example.com/img/dog.jpg?x=1: image URLs are not "
                           "downloaded: save the image and give its path")


# ---------------------------------------------------------------------------------------------------------------
# labels that stay readable


def test_labels_inside_the_image_and_not_covering_each_other():
    import cv2
    w, h = 320, 240
    placed = []
    a = place_label((0, 0, 100, 80), 60, 14, w, h, placed)           # box at the top-left corner
    assert a == (0, 0, 60, 14)                                        # inside the box, inside the image
    placed.append(a)
    b = place_label((0, 0, 90, 70), 60, 14, w, h, placed)            # a box on the same corner
    assert not (b[0] < a[2] and a[0] < b[2] and b[1] < a[3] and a[1] < b[3]) and b[3] <= h
    c = place_label((300, 100, 319, 150), 60, 14, w, h, [])          # at the right edge: shifted left
    assert c[2] <= w and c[0] == w - 60
    assert place_label((50, 100, 150, 200), 60, 14, w, h, []) == (50, 86, 110, 100)   # Darknet's place: above

    img = np.full((h, w, 3), 128, np.uint8)
    dets = [{"class_id": 0, "name": "person", "confidence": 0.9, "bbox": [-5.0, -8.0, 120.0, 100.0]},
            {"class_id": 1, "name": "dog", "confidence": 0.8, "bbox": [2.0, 1.0, 110.0, 90.0]}]
    out = draw_detections(img, dets, 2)
    (tw, th), base = cv2.getTextSize("person 90%", cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    assert (out[1:th, 5:tw] != 128).any(axis=2).mean() > 0.9         # the label sits in the image's top rows
    rows_changed = np.nonzero((out[:, 40] != 128).any(axis=1))[0]
    assert rows_changed.max() > 2 * th                                 # the second label went below the first


# ---------------------------------------------------------------------------------------------------------------
# export --partial


def test_export_partial(tiny, tmp_path, capsys):
    short = tmp_path / "short.weights"
    short.write_bytes((tiny / "tiny.weights").read_bytes()[:-40])
    rc, _, err = run_cli([tiny / "tiny.cfg", short, "-o", tmp_path / "m.onnx", "--no-verify"], capsys, "export")
    assert rc == 2 and "--partial" in err and len(err.strip().splitlines()) == 1
    with pytest.warns(Warning, match="loaded what fits"):
        rc, out, err = run_cli([tiny / "tiny.cfg", short, "-o", tmp_path / "m.onnx", "--no-verify", "--partial"],
                               capsys, "export")
    assert rc == 0 and (tmp_path / "m.onnx").is_file()


# ---------------------------------------------------------------------------------------------------------------
# threads: the CLI and set_threads() make OpenMP sleep instead of spin


def _py(code, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    e.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=e, timeout=120)


def test_wait_policy_cli_and_set_threads():
    cfg = ROOT / "weights" / "yolov3-tiny.cfg"
    cfg = cfg if cfg.exists() else ROOT / "cfg" / os.listdir(ROOT / "cfg")[0]
    code = ("import os, sys\nfrom darknet_prn import threads, cli\nthreads.busy_cpus = lambda *a, **k: {busy}\n"
            f"rc = cli.main(['summary', {str(cfg)!r}])\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    for busy, want in (("1.0", "PASSIVE"), ("None", "PASSIVE"), ("0.05", "None")):   # busy, unknown, quiet
        p = _py(code.format(busy=busy))
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[-1] == want, busy
    p = _py(code.format(busy="1.0"), OMP_WAIT_POLICY="ACTIVE")        # the user's own choice wins
    assert p.stdout.splitlines()[-1] == "ACTIVE"
    p = _py("import os, darknet_prn\nn = darknet_prn.set_threads(1, passive=True)\nimport torch\n"
            "print(os.environ['OMP_WAIT_POLICY'], n, torch.get_num_threads())")
    assert p.returncode == 0 and p.stdout.split() == ["PASSIVE", "1", "1"], p.stderr
    p = _py("import torch, darknet_prn\ndarknet_prn.set_threads()\nprint(torch.get_num_threads())")
    assert p.returncode == 0 and "before importing torch" in p.stderr
    assert int(p.stdout.split()[-1]) == len(os.sched_getaffinity(0))


def test_busy_cpus_reads_the_affinity_cpus():
    from darknet_prn import threads
    mine = sorted(os.sched_getaffinity(0))
    other = max(mine) + 1
    samples = iter([{c: (1000, 1000) for c in mine + [other]},
                    {**{c: (1100, 1050) for c in mine}, other: (1100, 1000)}])   # ours half busy, another full
    assert threads.busy_cpus(0.0, read=lambda: next(samples)) == pytest.approx(0.5 * len(mine))
    samples = iter([{c: (0, 0) for c in mine}, {c: (100, 100) for c in mine}])
    assert threads.busy_cpus(0.0, read=lambda: next(samples)) == 0.0
    assert threads.busy_cpus(0.0, read=lambda: {}) is None
    # the real /proc/stat while a busy loop runs on every CPU we may use
    hogs = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 5\nwhile time.time() < t: pass"])
            for _ in mine]
    try:
        import time
        time.sleep(0.2)
        assert threads.busy_cpus(0.3) > 0.5 * len(mine)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


# ---------------------------------------------------------------------------------------------------------------
# torchrun: inputs sharded by rank, rank 0 merges in input order


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_shards_merge_in_input_order(tiny, tmp_path, capsys, monkeypatch):
    """The sharding and merging code path of a 2-rank run, in one process: rank 1 runs first and hands its part
    to a stand-in for gather_object; rank 0 merges it with its own (the real torchrun run is the slow test)."""
    from darknet_prn import distributed
    d = tmp_path / "imgs"
    d.mkdir()
    import cv2
    img = cv2.imread(str(SAMPLE))
    for k in range(5):
        cv2.imwrite(str(d / f"{k}.jpg"), np.roll(img, 40 * k, axis=1))
    parts = []

    class FakeWorld(distributed.World):
        def __init__(self, rank):
            super().__init__()
            self.rank, self.size = rank, 2

        def gather(self, obj):
            parts.append(obj)
            return None if self.rank else [parts[-1], parts[0]]        # rank order: 0, 1

        def broadcast(self, obj):
            return str(tmp_path / "two") if self.rank else obj

    common = tiny_args(tiny, d, "--thresh", "0.3", "--names", tiny / "two.names", "-q", "--save-txt")
    rc, _, err = run_cli(common + ["--json", tmp_path / "one.json", "--darknet-json", tmp_path / "one_dk.json",
                                   "--out", tmp_path / "one"], capsys)
    assert rc == 0, err
    for rank in (1, 0):
        monkeypatch.setattr(distributed, "init", lambda rank=rank: FakeWorld(rank))
        # --exist-ok: here rank 1 wrote before rank 0 picks the folder (torchrun's ranks agree on it first)
        rc, _, err = run_cli(common + ["--json", tmp_path / "two.json", "--darknet-json", tmp_path / "two_dk.json",
                                       "--out", tmp_path / "two", "--exist-ok"], capsys)
        assert rc == 0, err
    assert [len(p[0]["json"]) for p in parts] == [2, 3]                # images 1, 3 and 0, 2, 4
    assert (tmp_path / "two.json").read_text() == (tmp_path / "one.json").read_text()
    assert (tmp_path / "two_dk.json").read_text() == (tmp_path / "one_dk.json").read_text()
    assert sorted(os.listdir(tmp_path / "two" / "labels")) == [f"{k}.txt" for k in range(5)]


@pytest.mark.slow
def test_torchrun_two_processes_same_json_as_one(tiny, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    import cv2
    img = cv2.imread(str(SAMPLE))
    for k in range(5):                      # different images, so that the order is checked
        cv2.imwrite(str(d / f"{k}.jpg"), np.roll(img, 40 * k, axis=1))
    common = [str(tiny / "tiny.cfg"), str(tiny / "tiny.weights"), str(d), "--thresh", "0.3", "--names",
              str(tiny / "two.names"), "--save-txt", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "darknet_prn", "detect", *common, "--json", str(tmp_path / "one.json"),
                          "--coco", str(tmp_path / "one_coco.json"), "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), "-m", "darknet_prn", "detect", *common, "--json",
                          str(tmp_path / "two.json"), "--coco", str(tmp_path / "two_coco.json"), "--out",
                          str(tmp_path / "two")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert [r["image"] for r in b] == [str(d / f"{k}.jpg") for k in range(5)]
    assert a == b
    assert json.loads((tmp_path / "one_coco.json").read_text()) == json.loads((tmp_path / "two_coco.json").read_text())
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
    for k in range(5):
        assert (tmp_path / "two" / "labels" / f"{k}.txt").read_text() == \
            (tmp_path / "one" / "labels" / f"{k}.txt").read_text()
    assert two.stderr.count("Results saved to") == 1                  # rank 0 reports
